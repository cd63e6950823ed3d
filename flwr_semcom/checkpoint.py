"""Checkpoint and resume: one atomic, safely loadable file per results folder (issue #9, part B).

A runner saves, after every ``reliability.checkpoint_every`` rounds, everything it needs to
continue as if it had never stopped: its cursor (the last completed round), the server's model
and optimizer, every client's state (fetched from the clients by message), the ledger, the
metric rows and the RNG states. :class:`Checkpointer` writes it to
``<results folder>/checkpoint.pt`` (temporary file in the same folder, ``fsync``, rename: a
``kill -9`` at any moment leaves either the previous or the new checkpoint, never a torn one)
and the run's Flower run config (``experiment``, ``overrides``) to ``run.json``, which
``semcom-run --resume <results folder>`` reads to start the same run again.

Loading uses ``torch.load(weights_only=True)`` (tensors, dicts, lists, strings, numbers only:
no code runs from a checkpoint). A checkpoint of another configuration or model shape is
refused with one line (:class:`CheckpointError`) naming the first differing key.

The payload is plain data, so any runner can use it: ``save(round, state)`` with ``state`` a
nested dict of tensors / numbers / strings / lists; :func:`records_to_plain` and
:func:`plain_to_records` turn a client's Flower records into such data and back.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from omegaconf import DictConfig, OmegaConf
from torch import nn

from flwr_semcom.accounting import atomic_write
from flwr_semcom.guard import check_finite

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT",
    "RUN_FILE",
    "Checkpoint",
    "CheckpointError",
    "Checkpointer",
    "config_fingerprint",
    "get_rng_state",
    "load_state_strict",
    "plain_to_records",
    "read_run_file",
    "records_to_plain",
    "safe_load_state",
    "set_rng_state",
]

CHECKPOINT_NAME = "checkpoint.pt"
RUN_FILE = "run.json"
FORMAT = 1
#: Config keys that may differ between a run and its resumption.
IGNORED_KEYS = ("reliability.resume",)


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or from another run (one line)."""


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{dotted key: value}``, without :data:`IGNORED_KEYS`."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    for key in IGNORED_KEYS:
        flat.pop(key, None)
    return {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in flat.items()}


def get_rng_state() -> dict[str, Any]:
    """torch, Python ``random`` and numpy global RNG states as safely loadable data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "python": json.dumps(random.getstate()),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))


def records_to_plain(records: Mapping[str, Any]) -> dict[str, Any]:
    """Flower records (``ArrayRecord`` / ``ConfigRecord`` / ``MetricRecord``) → plain data."""
    out: dict[str, Any] = {}
    for name, rec in records.items():
        if isinstance(rec, ArrayRecord):
            out[name] = {"kind": "arrays", "data": dict(rec.to_torch_state_dict())}
        elif isinstance(rec, ConfigRecord):
            out[name] = {"kind": "config", "data": dict(rec)}
        elif isinstance(rec, MetricRecord):
            out[name] = {"kind": "metrics", "data": dict(rec)}
        else:
            raise TypeError(f"record {name!r}: cannot checkpoint a {type(rec).__name__}")
    return out


def plain_to_records(plain: Mapping[str, Any]) -> RecordDict:
    """Inverse of :func:`records_to_plain`."""
    out = RecordDict()
    for name, entry in plain.items():
        kind, data = entry["kind"], entry["data"]
        if kind == "arrays":
            out[name] = ArrayRecord({k: v.contiguous() for k, v in data.items()})
        elif kind == "config":
            out[name] = ConfigRecord(dict(data))
        elif kind == "metrics":
            out[name] = MetricRecord(dict(data))
        else:
            raise CheckpointError(f"checkpoint record {name!r}: unknown kind {kind!r}")
    return out


@dataclass
class Checkpoint:
    """A loaded checkpoint: the last completed ``round``, the run config and the state."""

    round: int
    experiment: str
    overrides: str
    state: dict[str, Any]


def read_run_file(run_dir: str | Path) -> dict[str, str]:
    """``run.json`` of a results folder (``experiment``, ``overrides``); one-line errors."""
    path = Path(run_dir) / RUN_FILE
    if not (Path(run_dir) / CHECKPOINT_NAME).is_file():
        raise CheckpointError(
            f"{run_dir}: no {CHECKPOINT_NAME} (not a results folder of a checkpointed run, "
            "or killed before its first round ended)"
        )
    try:
        data = json.loads(path.read_text())
        return {"experiment": str(data["experiment"]), "overrides": str(data["overrides"])}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable run file ({err})") from None


class Checkpointer:
    """Save and load ``<run_dir>/checkpoint.pt`` for a run of ``cfg``.

    Parameters
    ----------
    run_dir
        The results folder.
    cfg
        The run's composed config; a checkpoint is only loaded into a run of the same config
        (up to :data:`IGNORED_KEYS`).
    experiment, overrides
        The Flower run config that started the run (what clients compose their config from).
    """

    def __init__(
        self, run_dir: str | Path, cfg: DictConfig, *, experiment: str, overrides: str
    ) -> None:
        self.dir = Path(run_dir)
        self.path = self.dir / CHECKPOINT_NAME
        self.fingerprint = config_fingerprint(cfg)
        self.experiment = experiment
        self.overrides = overrides

    def write_run_file(self) -> None:
        with atomic_write(self.dir / RUN_FILE) as fh:
            json.dump({"experiment": self.experiment, "overrides": self.overrides}, fh, indent=1)

    def save(self, round_: int, state: Mapping[str, Any]) -> None:
        """Write the checkpoint of completed round ``round_`` atomically.

        Weights holding NaN or inf are never saved (issue #9 non-finite guard): the
        ``server`` and ``clients`` entries are checked first and the previous checkpoint is
        kept (:class:`~flwr_semcom.guard.NonFiniteError`).
        """
        check_finite(
            "checkpoint weights",
            {k: state[k] for k in ("server", "clients") if k in state},
            where=f"checkpoint {self.path}",
            round_=round_,
            consequence="not saved (the previous checkpoint is kept)",
        )
        payload = {
            "format": FORMAT,
            "round": int(round_),
            "experiment": self.experiment,
            "overrides": self.overrides,
            "config": self.fingerprint,
            "state": dict(state),
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{CHECKPOINT_NAME}.", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(payload, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(self) -> Checkpoint:
        """Load and check the checkpoint; :class:`CheckpointError` (one line) if unusable."""
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no checkpoint to resume from")
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling problem means unusable
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise CheckpointError(f"{self.path}: cannot load safely ({first})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointError(f"{self.path}: not a flwr-semcom checkpoint of format {FORMAT}")
        saved = payload["config"]
        for key in sorted(set(saved) | set(self.fingerprint)):
            there, here = saved.get(key, "<absent>"), self.fingerprint.get(key, "<absent>")
            if there != here:
                raise CheckpointError(
                    f"{self.path}: written by another config: {key} = {there!r} there, "
                    f"{here!r} here; resume with the same experiment and overrides"
                )
        return Checkpoint(
            round=int(payload["round"]),
            experiment=str(payload["experiment"]),
            overrides=str(payload["overrides"]),
            state=payload["state"],
        )


def load_state_strict(
    module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str
) -> None:
    """``load_state_dict(strict=True)`` with a one-line :class:`CheckpointError` on mismatch."""
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "mismatch")
        raise CheckpointError(f"checkpoint {what} does not fit the model: {detail}") from None


def safe_load_state(path: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """Load the state dict in ``path`` into ``model`` (``weights_only``; names and shapes checked).

    Parameters
    ----------
    path
        A file written with ``torch.save(model.state_dict(), ...)``.
    model
        The model to load into; it is left untouched when anything is wrong.

    Returns
    -------
    dict
        The loaded state dict.

    Raises
    ------
    CheckpointError
        One line naming the file and what is wrong: missing file, not a checkpoint, a
        parameter missing / unexpected, or a parameter of another shape (a checkpoint of
        another architecture).
    NonFiniteError
        When the checkpoint holds NaN or inf (never installed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"checkpoint {path}: not a torch state dict ({first}); delete it to retrain"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(
            f"checkpoint {path}: expected a state dict of tensors, got {type(state).__name__}"
        )
    expected = model.state_dict()
    for name, ref in expected.items():
        if name not in state:
            raise CheckpointError(
                f"checkpoint {path}: parameter {name!r} is missing (another architecture?); "
                f"expected shape {tuple(ref.shape)}"
            )
        got = state[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"checkpoint {path}: parameter {name!r} has shape {tuple(got.shape)}; the model "
                f"expects {tuple(ref.shape)} (a checkpoint of another architecture)"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(
            f"checkpoint {path}: unexpected parameter {extra[0]!r} (another architecture?); "
            f"the model has {len(expected)} entries"
        )
    check_finite("checkpoint weights", state, where=f"load {path}", consequence="not installed")
    model.load_state_dict(state)
    return dict(state)
