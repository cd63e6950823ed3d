"""Resume for runners that are a sequence of units (issue #17, item 2; docs/reliability.md).

A unit is a part of a run that, once finished, the rest of the run only reads: paper 1's
Stage I or Stage II of one method (``multimodal``), one SLF / FedAvg alignment of one point
(``slf_table1``), one (R, method) link (``multitask``). After every unit the runner hands
:meth:`Progress.save` a snapshot of everything it has produced so far (metric rows, ledger
rows, the state the next unit starts from) as plain data; :class:`Progress` writes it with the
torch, numpy and Python RNG states to ``<results folder>/checkpoint.pt``
(:class:`~flwr_semcom.checkpoint.Checkpointer`: atomic, ``weights_only`` loading, refused
for another config) and ``run.json``, so ``semcom-run --resume <results folder>`` works as
for ``split_supervised``.

On ``reliability.resume`` the runner restores the snapshot, skips the finished units
(:meth:`Progress.is_done`), restores the RNG states (:meth:`Progress.restore_rng`) and runs the
interrupted unit again from its beginning: the unit starts from the same model and RNG state
as in an uninterrupted run, so the results folder ends byte-equal to one (timing fields
aside). A run whose last save was :meth:`Progress.finish` is finished: resuming it changes no
file and says so (:attr:`Progress.finished`). ``reliability.checkpoint_every=0`` writes
nothing (no resume).

The first snapshot (and ``run.json``) is written when the first unit ends: a run killed in
its first unit leaves nothing resumable (resuming it would be a fresh run).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.common.logger import log
from omegaconf import DictConfig

from flwr_semcom.checkpoint import (
    RUN_FILE,
    Checkpointer,
    CheckpointError,
    get_rng_state,
    set_rng_state,
)
from flwr_semcom.config import output_root
from flwr_semcom.reliability import FailurePolicy
from flwr_semcom.results import new_run_dir

__all__ = ["KIND", "Progress", "plain"]

#: ``state["kind"]`` of a unit checkpoint (a ``split_supervised`` checkpoint has none).
KIND = "units"


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers and tuples as lists (loadable with
    ``weights_only``; ``str()`` and ``json`` write the same text for both)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


class Progress:
    """The finished units of one run and the snapshot after the last of them.

    Use :meth:`open`; attributes:

    ``dir``
        The results folder (new, or the one resumed).
    ``resumed``, ``finished``
        Whether the run continues an earlier one; whether that one had finished.
    ``done``
        Names of the finished units, in order.
    ``state``
        The runner's snapshot after the last finished unit (``{}`` before the first).
    ``t_start``
        ``time.perf_counter()`` at the run's start, shifted back by the time the earlier
        attempt had run (for ``wall_time_s`` columns).
    """

    def __init__(
        self,
        run_dir: Path,
        checkpointer: Checkpointer | None,
        *,
        resumed: bool,
        saved: Mapping[str, Any] | None = None,
    ) -> None:
        self.dir = run_dir
        self._ckpt = checkpointer
        self.resumed = resumed
        saved = dict(saved or {})
        self.finished = bool(saved.get("finished", False))
        self.done: list[str] = [str(u) for u in saved.get("done", [])]
        self.state: dict[str, Any] = dict(saved.get("data", {}))
        self._rng = saved.get("rng")
        self.t_start = time.perf_counter() - float(saved.get("elapsed_s", 0.0))

    @classmethod
    def open(cls, cfg: DictConfig, context: Context) -> Progress:
        """A new run (a fresh results folder, the empty snapshot saved) or, with
        ``reliability.resume``, the saved progress of that folder (``CheckpointError`` when it
        has none or was written by another config)."""
        experiment = str(context.run_config.get("experiment", cfg.experiment.name))
        overrides = str(context.run_config.get("overrides", ""))
        every = FailurePolicy.from_config(cfg).checkpoint_every
        resume = cfg.get("reliability", {}).get("resume")
        if resume:
            run_dir = Path(str(resume)).resolve()
            ckpt = Checkpointer(run_dir, cfg, experiment=experiment, overrides=overrides).load()
            if ckpt.state.get("kind") != KIND:
                raise CheckpointError(f"{run_dir}: not a checkpoint of {cfg.experiment.runner}")
            checkpointer = Checkpointer(
                run_dir, cfg, experiment=ckpt.experiment, overrides=ckpt.overrides
            )
            progress = cls(run_dir, checkpointer, resumed=True, saved=ckpt.state)
            last = f", last {progress.done[-1]}" if progress.done else ""
            if progress.finished:
                log(
                    INFO,
                    "%s: %s finished already (%d units): nothing to do, no file changed",
                    cfg.experiment.runner,
                    run_dir,
                    len(progress.done),
                )
            else:
                log(
                    INFO,
                    "%s: resuming %s after %d finished unit(s)%s",
                    cfg.experiment.runner,
                    run_dir,
                    len(progress.done),
                    last,
                )
            return progress
        run_dir = new_run_dir(output_root(cfg), str(cfg.experiment.name))
        fresh: Checkpointer | None = None
        if every:
            fresh = Checkpointer(run_dir, cfg, experiment=experiment, overrides=overrides)
        return cls(run_dir, fresh, resumed=False)

    def is_done(self, unit: str) -> bool:
        """Whether ``unit`` finished in an earlier attempt (skip it)."""
        return unit in self.done

    def restore_rng(self) -> None:
        """Set the torch / numpy / Python RNG states saved with the last finished unit (a
        resumed run calls it right before its first unit; a no-op for a new run)."""
        if self.resumed and self._rng is not None:
            set_rng_state(self._rng)

    def save(self, unit: str, state: Mapping[str, Any]) -> None:
        """``unit`` finished; ``state`` is the runner's snapshot now (plain data)."""
        if unit in self.done:
            raise ValueError(f"unit {unit!r} saved twice")
        self.done.append(unit)
        self.state = plain(dict(state))
        self._write()

    def finish(self) -> None:
        """The run is complete (every output written): a resume changes nothing."""
        self.finished = True
        self._write()

    def summary(self) -> dict[str, Any]:
        """The finished run's ``summary.json``."""
        data: dict[str, Any] = json.loads((self.dir / "summary.json").read_text())
        return data

    def _write(self) -> None:
        if self._ckpt is None:
            return
        if not self.resumed and not (self.dir / RUN_FILE).is_file():
            self._ckpt.write_run_file()  # with the first checkpoint: only then resumable
        payload = {
            "kind": KIND,
            "done": list(self.done),
            "finished": self.finished,
            "data": self.state,
            "rng": get_rng_state(),
            "elapsed_s": time.perf_counter() - self.t_start,
        }
        self._ckpt.save(len(self.done), payload)
