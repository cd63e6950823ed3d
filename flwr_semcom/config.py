"""One config source: compose `conf/` with hydra and validate it.

The Flower run config (``[tool.flwr.app.config]`` / ``--run-config``) selects the
``experiment`` (a file of ``conf/experiment/``) and carries ``overrides`` (hydra overrides such
as ``"channel.snr_db=5 strategy.rounds=2"``) and kebab-case shortcut keys such as ``snr-db``
(:mod:`flwr_semcom.run_config`). The ServerApp and every ClientApp call
:func:`config_from_run_config` and so compose the same tree; no value has a default in two
places.

Validation is table-driven: :data:`RULES` maps a dotted key to a check and a description of
the valid range. Modules that own a config group add their rules with :func:`add_rules`.
Every failure is a :class:`ConfigError` whose message is one line naming the key and the
valid range.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# The generic rule machinery lives in flwr_semcom.rules (no hydra, no paper code); it is
# re-exported here for the modules that validate composed configs.
from flwr_semcom.rules import (
    CHECKS,
    RULES,
    ConfigError,
    Rule,
    _is_num,
    add_check,
    add_rules,
    device_rule,
    float_range,
    if_present,
    int_list,
    int_range,
    one_of,
    optional,
    resolve_device,
)

__all__ = [
    "CHECKS",
    "GROUP_RULES",
    "RULES",
    "STRATEGY_GROUPS",
    "ConfigError",
    "Rule",
    "add_check",
    "add_group_rules",
    "add_rules",
    "compose_config",
    "config_from_run_config",
    "float_range",
    "if_present",
    "int_list",
    "int_range",
    "one_of",
    "optional",
    "output_root",
    "project_root",
    "resolve_device",
    "strategy_group",
    "validate_config",
]


RULES.update(
    {
        "seed": int_range(0, 2**31 - 1),
        "device": device_rule(),
        "num_threads": int_range(1, 256),
        "paths.data_root": Rule(
            lambda v: v is None or (isinstance(v, str) and v != ""),
            "null or a non-empty folder path",
        ),
        "paths.output_dir": Rule(lambda v: isinstance(v, str) and v != "", "a non-empty path"),
        "experiment.name": Rule(lambda v: isinstance(v, str) and v != "", "a non-empty name"),
        "experiment.runner": Rule(lambda v: isinstance(v, str) and v != "", "a runner name"),
        "channel.name": one_of("awgn", "rayleigh", "dmc", "ideal"),
        "channel.snr_db": Rule(
            lambda v: _is_num(v) or (isinstance(v, (list, tuple)) and all(_is_num(x) for x in v)),
            "a finite number of dB",
            required=False,
        ),
        "channel.crossover": Rule(
            lambda v: _is_num(v) and 0.0 <= v <= 1.0, "a number in [0, 1]", required=False
        ),
        "channel.csi": Rule(
            lambda v: v in ("perfect", "none"), "'perfect' or 'none'", required=False
        ),
    }
)


#: Keys of the other groups of ``conf/`` (data, model, strategy, experiment, pretrain.augment)
#: that no owning module checks. Names are listed here rather than imported so that
#: validation does not import torch; tests compare them with the registries and ``conf/``.
RULES.update(
    {
        "paths.project_root": Rule(
            lambda v: v is None or (isinstance(v, str) and v != ""),
            "null or a folder path",
            required=False,
        ),
        "data.name": one_of("mnist_mix", "synthetic_rgbd"),
        "data.num_samples": if_present(int_range(2, 10_000_000)),
        "data.image_size": if_present(int_range(8, 512)),
        "data.label_fraction": if_present(float_range(0.0, 1.0, lo_open=True)),
        "data.val_fraction": if_present(float_range(0.0, 0.5)),
        "data.devices_per_modality": if_present(int_range(1, 1024)),
        "data.modalities": Rule(
            lambda v: isinstance(v, list) and len(v) > 0 and all(m in ("rgb", "depth") for m in v),
            "a non-empty list of 'rgb' / 'depth'",
            required=False,
        ),
        "model.encoder": if_present(one_of("resnet18", "small_cnn")),
        "model.num_symbols": if_present(int_range(1, 65_536)),
        "model.decoder_hidden": if_present(optional(int_range(1, 65_536))),
        "model.name": if_present(one_of("vqvae")),
        "strategy.name": one_of("slf", "split"),
        "experiment.num_nodes": if_present(int_range(1, 10_000)),
        "experiment.wait": if_present(float_range(0.0, None, lo_open=True)),
        **{
            f"pretrain.augment.{k}": if_present(float_range(0.0, 1.0))
            for k in (
                "flip_p",
                "jitter_p",
                "brightness",
                "contrast",
                "saturation",
                "grayscale_p",
                "depth_noise_p",
            )
        },
        "pretrain.augment.crop_scale_min": if_present(float_range(0.0, 1.0, lo_open=True)),
        "pretrain.augment.hue": if_present(float_range(0.0, 0.5)),
        "pretrain.augment.depth_noise_std": if_present(float_range(0.0, None)),
    }
)


#: The strategy groups of ``conf/strategy/``: group name -> a key only that group has, so the
#: selected group is known from the composed tree whatever ``strategy.name`` says.
STRATEGY_GROUPS: dict[str, str] = {"split": "strategy.server_task", "slf": "strategy.transceivers"}

#: Rules of keys that several strategy groups define with different ranges: group name ->
#: dotted key -> :class:`Rule`, applied in place of the general rule of :data:`RULES` when
#: that group is selected (:func:`add_group_rules`).
GROUP_RULES: dict[str, dict[str, Rule]] = {}


def add_group_rules(group: str, rules: Mapping[str, Rule]) -> None:
    """Register rules that hold when the strategy group ``group`` is selected."""
    GROUP_RULES.setdefault(group, {}).update(rules)


def strategy_group(cfg: DictConfig) -> str | None:
    """The selected strategy group (a name of :data:`STRATEGY_GROUPS`), None if not one."""
    found = [g for g, key in STRATEGY_GROUPS.items() if _lookup(cfg, key)[0]]
    return found[0] if len(found) == 1 else None


def _check_strategy_name(cfg: DictConfig) -> None:
    """``strategy.name`` names the selected group (``strategy.name=split`` under the SLF group
    would silently skip the SLF checks)."""
    group = strategy_group(cfg)
    name = OmegaConf.select(cfg, "strategy.name")
    if group is not None and name != group:
        raise ConfigError(
            f"strategy.name: {name!r} does not match the selected strategy group {group!r} "
            f"(conf/strategy/{group}.yaml); choose the group with strategy=NAME, "
            "not strategy.name"
        )


def _check_snr_db(cfg: DictConfig) -> None:
    """A list of SNRs is ``multitask``'s evaluation grid; every other run trains at one SNR."""
    found, snr = _lookup(cfg, "channel.snr_db")
    if found and "multitask" not in cfg and not _is_num(snr):
        raise ConfigError(
            f"channel.snr_db: invalid value {snr!r}; expected a finite number of dB "
            "(a list is for experiment=multitask only)"
        )


add_check(_check_strategy_name)
add_check(_check_snr_db)


#: Modules that own config groups and register their rules with :func:`add_rules` on import.
#: Imported before every validation so that a bad value fails at start-up, in the launcher,
#: not later inside a run.
RULE_MODULES: tuple[str, ...] = (
    "flwr_semcom.split",
    "flwr_semcom.paper1.settings",
    "flwr_semcom.slf.settings",
    "flwr_semcom.multitask.settings",
    "flwr_semcom.reliability",
)


def _load_rule_modules() -> None:
    import importlib

    for name in RULE_MODULES:
        importlib.import_module(name)


def conf_dir() -> Path:
    """The ``conf/`` folder: ``$FLWR_SEMCOM_CONF_DIR`` or the one beside the package."""
    env = os.environ.get("FLWR_SEMCOM_CONF_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "conf"
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"config folder {path} has no config.yaml; set FLWR_SEMCOM_CONF_DIR")
    return path


def split_overrides(overrides: str | Sequence[str] | None) -> list[str]:
    """Turn ``"a=1 b='x y'"`` (the Flower run config form) into hydra override strings."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        try:
            return shlex.split(overrides)
        except ValueError as err:
            raise ConfigError(f"overrides: cannot parse {overrides!r} ({err})") from None
    return [str(o) for o in overrides]


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _explain_hydra_error(err: BaseException, directory: Path) -> str:
    """Rewrite hydra's messages as one line naming the key and what is valid."""
    line = _one_line(err)
    m = re.search(r"Could not override '([^']+)'", line)
    if m:
        return (
            f"{m.group(1)}: unknown config key (not in conf/); "
            "fix the spelling, or see `conf/` for the valid keys"
        )
    m = re.search(r"Could not find '([^'/]+)/([^']+)'", line)
    if m:
        group, option = m.groups()
        valid = sorted(p.stem for p in (directory / group).glob("*.yaml"))
        return f"{group}: unknown option {option!r}; valid names: {', '.join(valid)}"
    return f"overrides: {line}"


def compose_config(
    experiment: str = "main", overrides: str | Sequence[str] | None = None
) -> DictConfig:
    """Compose ``conf/`` for ``experiment`` with hydra ``overrides`` and validate it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not isinstance(experiment, str) or not experiment:
        raise ConfigError(f"experiment must be a non-empty name, got {experiment!r}")
    items = split_overrides(overrides)
    directory = conf_dir()
    valid_experiments = sorted(p.stem for p in (directory / "experiment").glob("*.yaml"))
    if experiment not in valid_experiments:
        raise ConfigError(
            f"experiment: unknown {experiment!r}; valid names: {', '.join(valid_experiments)}"
        )
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"experiment={experiment}", *items])
    except Exception as err:  # hydra raises several types; all mean a bad override
        raise ConfigError(_explain_hydra_error(err, directory)) from None
    finally:
        GlobalHydra.instance().clear()
    validate_config(cfg)
    return cfg


def _lookup(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        node = node[part]
    if isinstance(node, DictConfig):
        return True, OmegaConf.to_container(node, resolve=True)
    if OmegaConf.is_list(node):
        return True, OmegaConf.to_container(node, resolve=True)
    return True, node


def _group_present(cfg: DictConfig, key: str) -> bool:
    head = key.split(".")[0]
    return head in cfg


def validate_config(cfg: DictConfig) -> None:
    """Check every key with a rule; raise :class:`ConfigError` on the first violation."""
    _load_rule_modules()
    group_rules = GROUP_RULES.get(strategy_group(cfg) or "", {})
    for key, rule in list({**RULES, **group_rules}.items()):
        found, value = _lookup(cfg, key)
        if not found:
            if rule.required and _group_present(cfg, key):
                raise ConfigError(f"{key}: missing; expected {rule.valid}")
            continue
        if not rule.check(value):
            raise ConfigError(f"{key}: invalid value {value!r}; expected {rule.valid}")
    for check in list(CHECKS):
        check(cfg)


def config_from_run_config(run_config: Mapping[str, Any]) -> DictConfig:
    """Compose the config selected by a Flower run config (a copy; cached per process).

    Keys: ``experiment``, ``overrides`` and the shortcuts of
    :data:`flwr_semcom.run_config.RUN_KEYS` (an empty string = unset).
    """
    from flwr_semcom.run_config import compose_run_config

    return compose_run_config(run_config)


def project_root(cfg: DictConfig) -> Path:
    """The checkout the run belongs to (``paths.project_root``, else the current directory)."""
    root = cfg.paths.get("project_root")
    return Path(str(root)).expanduser().resolve() if root else Path.cwd()


def output_root(cfg: DictConfig) -> Path:
    """Absolute folder below which results folders are created (``paths.output_dir``; a
    relative path is taken from :func:`project_root`)."""
    out = Path(str(cfg.paths.output_dir)).expanduser()
    return out if out.is_absolute() else project_root(cfg) / out
