"""Batch planning and bookkeeping of :class:`~strategies.split_training.SplitTraining`.

One Flower round is one pass over the aligned training IDs, cut into batches of
``batch_size`` and the batches into groups of S = ``steps_per_message`` (one group per
exchange); every client sees the same batches with its own channel-noise seeds
(:mod:`flwr_semcom.split.schedule`). The evaluation goes through the test IDs in chunks of
``eval_batches_per_message`` batches.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from logging import INFO
from typing import Any

import torch
from flwr.app import Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp.strategy import Result

from flwr_semcom.accounting import CommLedger
from flwr_semcom.split.compute import SCHEDULES
from flwr_semcom.split.schedule import (
    BatchPlan,
    client_plans,
    eval_batches,
    group,
    train_batches,
)

__all__ = [
    "EvalPlan",
    "PassPlan",
    "add_sums",
    "add_timing",
    "check_arguments",
    "finish_round",
    "log_summary",
    "plan_eval",
    "plan_pass",
]


@dataclass
class PassPlan:
    """Progress of one training pass (one round)."""

    round: int
    groups: list[list[BatchPlan]]
    plans: list[list[list[BatchPlan]]]  # [client][group][batch]
    exchange: int = 0
    grads: list[list[dict[str, torch.Tensor]]] | None = None  # [client][batch]
    sums: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)  # push → last reply, per exchange

    @property
    def done(self) -> bool:
        return self.exchange > len(self.groups)

    def metrics(self, train_time_s: float) -> dict[str, float]:
        """Loss, accuracy and timings of the finished pass."""
        n = max(self.sums.get("n", 0.0), 1.0)
        out = {
            "loss": self.sums.get("loss_sum", 0.0) / n,
            "train_accuracy": self.sums.get("correct", 0.0) / n,
            "train_samples": self.sums.get("n", 0.0),
            "exchanges": float(len(self.groups) + 1),
            "train_time_s": train_time_s,
            "wait_s": sum(self.waits),
            "wait_median_s": statistics.median(self.waits),
        }
        out.update(self.times)
        return out


@dataclass
class EvalPlan:
    """Progress of one evaluation."""

    chunks: list[list[BatchPlan]]
    plans: list[list[list[BatchPlan]]]  # [client][chunk][batch]
    chunk: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    #: metric prefix: ``test`` (``test_loss``, ``test_accuracy``, ``eval_time_s``) or ``val``
    #: (``val_loss``, ``val_accuracy``, ``val_eval_time_s``)
    prefix: str = "test"

    def metrics(self, eval_time_s: float) -> dict[str, float]:
        """Loss and accuracy of the finished evaluation."""
        n = max(self.sums.get("n", 0.0), 1.0)
        p = self.prefix
        return {
            f"{p}_loss": self.sums.get("loss_sum", 0.0) / n,
            f"{p}_accuracy": self.sums.get("correct", 0.0) / n,
            "eval_time_s" if p == "test" else f"{p}_eval_time_s": eval_time_s,
        }


def plan_pass(
    train_ids: torch.Tensor,
    *,
    batch_size: int,
    steps_per_message: int,
    seed: int,
    round_: int,
    stage: str,
    drop_last: bool,
    num_clients: int,
) -> PassPlan:
    """Plan the training pass of ``round_`` (shared by every client)."""
    batches = train_batches(
        train_ids, batch_size, seed=seed, round_=round_, stage=stage, drop_last=drop_last
    )
    if not batches:
        raise RuntimeError(
            f"no training batch: {train_ids.shape[0]} training samples, batch_size={batch_size}"
        )
    plans = [
        group(client_plans(batches, c, seed=seed, stage=stage, round_=round_), steps_per_message)
        for c in range(num_clients)
    ]
    return PassPlan(round_, group(batches, steps_per_message), plans)


def plan_eval(
    test_ids: torch.Tensor,
    *,
    batch_size: int,
    batches_per_message: int,
    seed: int,
    num_clients: int,
    prefix: str = "test",
) -> EvalPlan | None:
    """Plan the evaluation of ``test_ids`` (every round under the same noise); ``None`` if
    there is nothing to evaluate. ``prefix`` ``"val"``: the validation IDs, whose channel
    noise is its own stream (noise stage ``"val"``; the test's is ``"eval"``)."""
    batches = eval_batches(test_ids, batch_size)
    if not batches:
        return None
    per = batches_per_message or len(batches)
    stage = "eval" if prefix == "test" else prefix
    plans = [
        group(client_plans(batches, c, seed=seed, stage=stage, round_=0), per)
        for c in range(num_clients)
    ]
    return EvalPlan(group(batches, per), plans, prefix=prefix)


def add_sums(sums: dict[str, float], stats: dict[str, float]) -> None:
    """Add ``stats`` into ``sums`` key by key."""
    for k, v in stats.items():
        sums[k] = sums.get(k, 0.0) + float(v)


def add_timing(times: dict[str, float], replies: Sequence[Message | None]) -> None:
    """Add this exchange's slowest client's load / compute / save times to ``times``."""
    recs = [
        r.content.metric_records["timing"]
        for r in replies
        if r is not None and "timing" in r.content
    ]
    if not recs:
        return
    for k in ("load_s", "compute_s", "save_s"):
        slowest = max(float(rec.get(k, 0.0)) for rec in recs)  # type: ignore[arg-type]
        times[f"client_{k}"] = times.get(f"client_{k}", 0.0) + slowest


def finish_round(row: dict[str, Any], ledger: CommLedger, result: Result, rounds: int) -> None:
    """Add the cumulative bytes and channel uses to a round's ``row``, put its metrics into
    Flower's ``result`` and log the round's line."""
    r = int(row["round"])
    row["up_bytes"] = ledger.total("bytes", direction="up", max_round=r)
    row["down_bytes"] = ledger.total("bytes", direction="down", max_round=r)
    row["channel_uses"] = ledger.total("channel_uses", max_round=r)
    result.train_metrics_clientapp[r] = MetricRecord(
        {k: float(row[k]) for k in ("loss", "train_accuracy", "train_time_s")}
    )
    if "test_accuracy" in row:
        result.evaluate_metrics_clientapp[r] = MetricRecord(
            {k: float(row[k]) for k in ("test_loss", "test_accuracy")}
        )
    log(
        INFO,
        "split round %d/%d: loss %.4f train acc %.4f test acc %.4f | %.3g bits "
        "(%d channel uses) | %.1f s",
        r,
        rounds,
        row["loss"],
        row["train_accuracy"],
        row.get("test_accuracy", float("nan")),
        8 * (row["up_bytes"] + row["down_bytes"]),
        row["channel_uses"],
        row["round_time_s"],
    )


def check_arguments(*, ints: dict[str, tuple[Any, int]], positive: dict[str, Any]) -> None:
    """``ValueError`` (naming the argument) unless each of ``ints`` is an integer >= its bound
    and each of ``positive`` a number > 0."""
    for name, (value, lo) in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name}: {value!r} invalid; expected an integer >= {lo}")
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name}: {value!r} invalid; expected a number > 0")


def schedule_values(schedule: str, compensation: float) -> dict[str, Any]:
    """Config-record values of a client-step schedule (``{}`` for ``exact``, so exact
    messages stay as they were); ``ValueError`` naming the argument if invalid."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: {schedule!r} invalid; expected one of {SCHEDULES}")
    if isinstance(compensation, bool) or not isinstance(compensation, (int, float)):
        raise ValueError(f"compensation: {compensation!r} invalid; expected a number >= 0")
    if not compensation >= 0:
        raise ValueError(f"compensation: {compensation!r} invalid; expected a number >= 0")
    if schedule == "exact":
        return {}
    return {"schedule": schedule, "compensation": float(compensation)}


def log_summary(strategy: Any) -> None:
    """Log the configuration of a split strategy."""
    log(
        INFO,
        "SplitTraining: task=%s/%s clients=%d rounds=%d batch=%d S=%d train=%d test=%d "
        "poll=%gs policy=%s",
        strategy.client_task,
        type(strategy.server).__name__,
        strategy.server.num_clients,
        strategy.rounds,
        strategy.batch_size,
        strategy.steps_per_message,
        int(strategy.server.train_ids.shape[0]),
        int(strategy.server.test_ids.shape[0]),
        strategy.poll_interval,
        strategy.policy.on_failure,
    )
