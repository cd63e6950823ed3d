"""Checkpoint cache: train once, reuse while the config that produced the weights is unchanged.

A checkpoint is keyed by a hash of its *spec* (a JSON-able dict of everything that determines
the weights: model sizes, data, training hyper-parameters, seed). Files are
``<cache_dir>/<kind>-<hash16>.pt`` (a ``state_dict`` saved with ``torch.save``) and a
``.json`` side file with the spec and training info. Writes go to a temporary file that is
renamed into place (:class:`flwr_semcom.accounting.atomic_write`), so a killed run never
leaves a half-written checkpoint; an exclusive lock file lets two processes that need the
same checkpoint train it once. Loading uses
``torch.load(..., weights_only=True)`` (no pickled code runs) through
:func:`flwr_semcom.checkpoint.safe_load_state` (a checkpoint of another architecture is one
line naming the file and the parameter). A model holding NaN or inf is never saved
(:class:`~flwr_semcom.guard.NonFiniteError`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable, Mapping
from logging import INFO
from pathlib import Path
from typing import Any, TypeVar

import torch
from flwr.common.logger import log
from torch import nn

from flwr_semcom.accounting import atomic_write
from flwr_semcom.checkpoint import safe_load_state
from flwr_semcom.guard import check_finite

__all__ = ["checkpoint_path", "load_or_train", "spec_hash"]

M = TypeVar("M", bound=nn.Module)


def spec_hash(spec: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the spec's canonical JSON (sorted keys)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_path(cache_dir: str | Path, kind: str, spec: Mapping[str, Any]) -> Path:
    """Where the checkpoint of ``spec`` lives: ``<cache_dir>/<kind>-<hash>.pt``."""
    return Path(cache_dir) / f"{kind}-{spec_hash(spec)}.pt"


def load_or_train(
    cache_dir: str | Path,
    kind: str,
    spec: Mapping[str, Any],
    build: Callable[[], M],
    train: Callable[[M], Mapping[str, Any]],
) -> tuple[M, bool]:
    """Return the model of ``spec``: from the cache, or trained now and cached.

    Parameters
    ----------
    cache_dir
        Absolute cache folder (created if missing).
    kind
        File name prefix (``transceiver``, ``classifier``).
    spec
        Everything that determines the weights (JSON-able); its hash is the cache key.
    build
        Returns a freshly initialised model of the right architecture (on CPU).
    train
        Trains the model in place and returns JSON-able info stored beside the checkpoint.

    Returns
    -------
    tuple
        ``(model, from_cache)``; the model is on CPU, in eval mode.
    """
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, kind, spec)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then loads
        try:
            model = build()
            if path.is_file():
                safe_load_state(path, model)
                model.eval()
                return model, True
            log(
                INFO,
                "SLF cache: training %s %s (key %s)",
                kind,
                dict(spec).get("name", ""),
                path.stem,
            )
            info = dict(train(model))
            model = model.cpu().eval()
            check_finite(f"{kind} weights", model, where=f"cache {path}", consequence="not saved")
            with atomic_write(path.with_suffix(".json")) as fh:
                json.dump({"spec": dict(spec), "info": info}, fh, indent=1, default=str)
            with atomic_write(path, "wb") as fh:
                torch.save(model.state_dict(), fh)
            return model, False
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
