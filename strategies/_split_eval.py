"""Evaluation of :class:`~strategies.split_training.SplitTraining`: test and validation IDs.

After each training pass the strategy evaluates the server task's ``test_ids`` and then its
``val_ids`` (model selection; none by default) through ``evaluate.split_forward``: the devices
run in eval mode under no-grad (no batch-norm statistic or weight changes; every batch reseeds
its channel noise), the server task's ``eval_step`` runs in eval mode, so the validation pass
leaves the test metrics and the training that follows bit-identical. The validation channel
noise has its own seed stream (``"val"``; the test's is ``"eval"``); both are counted as
ledger stage ``eval``.
"""

from __future__ import annotations

import time
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from strategies._split_plan import plan_eval

__all__ = ["evaluate_ids", "evaluate_round"]


def evaluate_ids(strategy: Any, grid: Grid, server_round: int, prefix: str) -> dict[str, float]:
    """Evaluate ``strategy.server.<prefix>_ids`` (``prefix`` ``"test"`` or ``"val"``) chunk by
    chunk; return ``<prefix>_loss``, ``<prefix>_accuracy`` and the time ({} without IDs)."""
    t0 = time.perf_counter()
    ids = getattr(strategy.server, f"{prefix}_ids", None)
    if ids is None:
        return {}
    e = plan_eval(
        ids,
        batch_size=strategy.eval_batch_size,
        batches_per_message=strategy.eval_per_message,
        seed=strategy.seed,
        num_clients=len(strategy.clients),
        prefix=prefix,
    )
    if e is None:
        return {}
    strategy._eval = e
    what = "evaluation" if prefix == "test" else "validation"
    while e.chunk < len(e.chunks):
        msgs = list(strategy.configure_evaluate(server_round, ArrayRecord(), ConfigRecord(), grid))
        where = f"{what} chunk {e.chunk}"
        strategy.aggregate_evaluate(
            server_round, strategy._deliver(grid, msgs, "eval", server_round, where)
        )
    strategy._eval = None
    return e.metrics(time.perf_counter() - t0)


def evaluate_round(strategy: Any, grid: Grid, server_round: int) -> dict[str, float]:
    """The test metrics, then the validation metrics when the server task has ``val_ids``."""
    out = evaluate_ids(strategy, grid, server_round, "test")
    out.update(evaluate_ids(strategy, grid, server_round, "val"))
    return out
