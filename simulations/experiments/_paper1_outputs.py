"""Paper 1's results folder: one metric row per method, stage and round; ledger; plots.

The folder layout and column meanings are documented in docs/paper1.md ("Results folder").
:class:`RunLog` adds a row to ``metrics.csv`` / ``.json`` (with the stage's cumulative bits
from the method's ledger, :func:`~simulations.experiments._paper1_summary.stage_bits`) and
logs it; :func:`write_ledger` writes every transfer of every method; :func:`plot_accuracy`
draws test accuracy against Stage II rounds and bits.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from logging import INFO
from typing import Any

from flwr.common.logger import log

from flwr_semcom.accounting import CommLedger, atomic_write
from flwr_semcom.results import Results, plot_lines
from simulations.experiments._paper1_summary import stage_bits

__all__ = ["LEDGER_COLUMNS", "RunLog", "plot_accuracy", "write_ledger"]

LEDGER_COLUMNS = (
    "method",
    "direction",
    "stage",
    "kind",
    "bytes",
    "channel_uses",
    "round",
    "client",
)


class RunLog:
    """Metric rows of one run (``results.rows``), each also logged as one line.

    Parameters
    ----------
    results
        The run's results folder.
    snr_db, label_fraction
        Constant columns of every row.
    """

    def __init__(self, results: Results, *, snr_db: float, label_fraction: float) -> None:
        self.results = results
        self.snr_db = snr_db
        self.label_fraction = label_fraction
        self.t_start = time.perf_counter()

    def row(
        self,
        label: str,
        stage: str,
        round_: int,
        rounds: int,
        metrics: Mapping[str, float],
        ledger: CommLedger,
        t_round: float,
    ) -> dict[str, Any]:
        """Add the row of ``label``'s round ``round_`` of ``stage`` (started at ``t_round``)."""
        bits = stage_bits(ledger, stage, round_)
        row: dict[str, Any] = {
            "method": label,
            "stage": stage,
            "round": round_,
            "snr_db": self.snr_db,
            "label_fraction": self.label_fraction,
            "loss": metrics.get("loss", math.nan),
            "train_accuracy": metrics.get("train_accuracy", math.nan),
            "test_accuracy": metrics.get("test_accuracy", math.nan),
            "val_loss": metrics.get("val_loss", math.nan),
            "val_accuracy": metrics.get("val_accuracy", math.nan),
            **bits,
            "bits": 8 * (bits["up_bytes"] + bits["down_bytes"]),
            "grad_norm_mean": metrics.get("grad_norm_mean", math.nan),
            "grad_norm_max": metrics.get("grad_norm_max", math.nan),
            "uplink_grad_norm_max": metrics.get("uplink_grad_norm_max", math.nan),
            "round_time_s": time.perf_counter() - t_round,
            "wall_time_s": time.perf_counter() - self.t_start,
        }
        self.results.add(row)
        acc = row["test_accuracy"]
        norm = row["grad_norm_max"]
        if math.isnan(norm):  # Stage I split: the server has no weights, log ∂L/∂uplink
            norm = row["uplink_grad_norm_max"]
        log(
            INFO,
            "[%s] %s round %d/%d | loss %.4f%s | %s bits (+%s control) | grad norm max %.3g | "
            "%.1f s (total %.0f s)",
            label,
            stage,
            round_,
            rounds,
            row["loss"],
            ("" if math.isnan(acc) else f" | test acc {acc:.4f}")
            + ("" if math.isnan(row["val_accuracy"]) else f" | val acc {row['val_accuracy']:.4f}"),
            f"{row['bits']:.4g}",
            f"{8 * bits['control_bytes']:.3g}",
            norm,
            row["round_time_s"],
            row["wall_time_s"],
        )
        return row


def write_ledger(results: Results, ledgers: Mapping[str, CommLedger]) -> None:
    """``ledger.csv`` (one row per transfer, with its method) and ``ledger.json``."""
    rows = [
        {"method": label, **rec} for label, ledger in ledgers.items() for rec in ledger.to_records()
    ]
    with atomic_write(results.dir / "ledger.csv") as fh:
        fh.write(",".join(LEDGER_COLUMNS) + "\n")
        for r in rows:
            fh.write(",".join(str(r[c]) for c in LEDGER_COLUMNS) + "\n")
    with atomic_write(results.dir / "ledger.json") as fh:
        json.dump(
            {
                "summary": {lab: led.summary() for lab, led in ledgers.items()},
                "transfers": rows,
            },
            fh,
            indent=1,
        )


def plot_accuracy(results: Results, *, snr_db: Any, label_fraction: float) -> None:
    """``accuracy_vs_rounds.png`` and ``accuracy_vs_bits.png``: one line per method."""
    rows = [r for r in results.rows if r["stage"] == "finetune"]
    by_rounds: dict[str, tuple[list[float], list[float]]] = {}
    by_bits: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        xs, ys = by_rounds.setdefault(r["method"], ([], []))
        xs.append(r["round"])
        ys.append(r["test_accuracy"])
        bx, by = by_bits.setdefault(r["method"], ([], []))
        bx.append(max(float(r["bits"]), 1.0))
        by.append(r["test_accuracy"])
    title = f"SNR {snr_db} dB, {100 * label_fraction:g}% labels"
    plot_lines(
        results.dir / "accuracy_vs_rounds.png",
        by_rounds,
        xlabel="Stage-II round",
        ylabel="test accuracy",
        title=title,
    )
    plot_lines(
        results.dir / "accuracy_vs_bits.png",
        by_bits,
        xlabel="cumulative Stage-II bits (features + gradients)",
        ylabel="test accuracy",
        title=title,
        logx=True,
    )
