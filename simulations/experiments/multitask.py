"""Experiment ``multitask``: paper 3's GAI vs GAI-w vs separate links, trained with FedAvg.

Paper 3 (multi-task semcom with graph-attention inter-block feature correlation, arXiv
2501.02006). For every bandwidth ratio ``R`` of ``multitask.bandwidth_ratios`` and every
method of ``multitask.methods`` (``gai``, ``gai_w``, ``separate``), a fresh link is trained
with :class:`~strategies.fedavg_multitask.FedAvgMultitask` over the ``D`` devices
(``multitask.rounds`` rounds of ``multitask.local_epochs`` local epochs; training SNR drawn
per sample from ``multitask.train_snr_db``) and evaluated after every round at every SNR of
``channel.snr_db``.

Results folder (``outputs/multitask/<stamp>/``): ``config.yaml``, ``metrics.csv/json`` (one
row per round, method, R and SNR: task metrics, train losses, cumulative parameter bytes),
``final.csv`` / ``table.md`` (last round), ``gains.csv`` / ``gains.md`` (GAI's relative gain
over each baseline, the paper's measure), ``<task>_vs_R.png``, ``<task>_vs_snr.png``,
``ledger.csv/json``, ``summary.json``.

This runner is the experiment's edge: it translates the composed hydra config into typed
settings (:func:`~flwr_semcom.multitask.settings.settings_from_config`) and builds typed
objects from them; the strategy, the link and the devices' handlers never see the config.
The same seed gives byte-equal metrics, ledger and summary (wall times excluded): the
strategy aggregates in partition order and every random draw is seeded from ``seed``.

Run: ``semcom-run --experiment multitask`` (or ``flwr run . --run-config
'experiment="multitask"'``).
"""

from __future__ import annotations

import time
from logging import INFO
from typing import Any

import torch
from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid
from omegaconf import DictConfig

from flwr_semcom.accounting import CommLedger, atomic_write
from flwr_semcom.multitask import protocol as P
from flwr_semcom.multitask.report import (
    PAPER_CLAIM,
    final_rows,
    gains,
    gains_markdown,
    plot_all,
    table_markdown,
)
from flwr_semcom.multitask.settings import settings_from_config
from flwr_semcom.multitask.spec import SOURCE_DIMS, MultitaskSettings, ratio_label
from flwr_semcom.multitask.system import symbols_for_ratio
from flwr_semcom.multitask.tasks import Task
from flwr_semcom.multitask.training import build_model, build_tasks
from flwr_semcom.results import Results, write_csv
from simulations.common import wait_for_nodes
from simulations.experiments._resume import Progress
from strategies.fedavg_multitask import FedAvgMultitask, RoundReport

__all__ = ["num_nodes", "run"]


def num_nodes(cfg: DictConfig) -> int:
    """The launcher starts one SuperNode per device."""
    return int(cfg.multitask.num_devices)


def _round_rows(
    report: RoundReport, method: str, ratio: float, tasks: list[Task], snrs: list[float]
) -> list[dict[str, Any]]:
    """One history row per evaluation SNR: exact task metrics, train losses, bytes; with a
    validation part also ``val_<task>_<metric>`` and ``val_images`` (reported beside the
    test metrics; nothing is selected on either: the tables use the last round)."""
    metrics = P.metrics_from_sums(report.evaluation, tasks, snrs)
    train = report.train
    nan = float("nan")
    val: dict[float, dict[str, Any]] = {snr: {} for snr in metrics}
    val_key = P.VAL_PREFIX + "num-examples"
    if val_key in report.evaluation:
        for snr, per_task in P.metrics_from_sums(
            report.evaluation, tasks, snrs, prefix=P.VAL_PREFIX
        ).items():
            val[snr] = {f"val_{t.name}_{t.metric}": per_task[t.name] for t in tasks}
            val[snr]["val_images"] = int(report.evaluation[val_key])
    return [
        {
            "round": report.round,
            "method": method,
            "ratio": ratio,
            "snr_db": snr,
            **{f"{t.name}_{t.metric}": per_task[t.name] for t in tasks},
            "train_loss": train.get("loss", nan),
            **{f"train_loss_{t.name}": train.get(f"loss-{t.name}", nan) for t in tasks},
            "test_images": int(report.evaluation["num-examples"]),
            "bytes_up": report.bytes_up,
            "bytes_down": report.bytes_down,
            "elapsed_s": report.elapsed_s,
            **val[snr],
        }
        for snr, per_task in metrics.items()
    ]


def _train_link(
    grid: Grid,
    settings: MultitaskSettings,
    method: str,
    ratio: float,
    ledger: CommLedger,
    results: Results,
) -> dict[str, Any]:
    """FedAvg of one (method, R) link; its rows go to ``results`` as the rounds finish."""
    tasks = build_tasks(settings.link)
    snrs = list(settings.local.eval_snr_db)
    model = build_model(settings.link, method, ratio, seed=settings.seed)
    label = f"{method}/R={ratio_label(ratio)}"
    params = sum(p.numel() for p in model.parameters())
    log(
        INFO,
        "[multitask] %s: k=%d channel uses per image (%s), %d parameters, %d devices",
        label,
        model.num_symbols,
        "+".join(str(k) for k in model.symbols),
        params,
        settings.num_devices,
    )

    def on_round(report: RoundReport) -> None:
        rows = _round_rows(report, method, ratio, tasks, snrs)
        for row in rows:
            results.add(row)
        parts = " | ".join(
            f"{row['snr_db']:g} dB: "
            + " ".join(f"{t.metric} {row[f'{t.name}_{t.metric}']:.4f}" for t in tasks)
            for row in rows
        )
        log(
            INFO,
            "[multitask] %s round %d/%d: loss %.4f | %s | params up %.2f MB down %.2f MB | %.0f s",
            label,
            report.round,
            settings.rounds,
            report.train.get("loss", float("nan")),
            parts,
            report.bytes_up / 1e6,
            report.bytes_down / 1e6,
            report.elapsed_s,
        )

    strategy = FedAvgMultitask(
        num_devices=settings.num_devices,
        task_params={"method": method, "ratio": ratio},
        train_message_type=P.FIT,
        evaluate_message_type=P.EVAL,
        ledger=ledger,
        label=label,
        on_round=on_round,
    )
    t_run = time.perf_counter()
    strategy.start(
        grid,
        P.to_record(model.state_dict()),
        num_rounds=settings.rounds,
        timeout=settings.timeout,
        train_config=ConfigRecord({}),
        evaluate_config=ConfigRecord({}),
    )
    return {
        "method": method,
        "ratio": ratio,
        "R": ratio_label(ratio),
        "channel_uses_per_image": model.num_symbols,
        "parameters": params,
        "wall_s": time.perf_counter() - t_run,
    }


def run(grid: Grid, cfg: DictConfig, context: Context) -> dict[str, Any]:
    """Train and evaluate every (R, method); write the results folder; return the summary.

    Resumable per link (unit ``<i>:<method>/R=<R>``, :mod:`simulations.experiments._resume`)
    with ``reliability.resume``: finished links are skipped, the interrupted one restarts."""
    settings = settings_from_config(cfg)
    torch.set_num_threads(settings.num_threads)
    progress = Progress.open(cfg, context)
    results = Results(progress.dir)
    if progress.finished:
        return progress.summary()
    if not progress.resumed:
        results.save_config(cfg)
    wait_for_nodes(grid, settings.num_devices, timeout=120.0)
    ledger = CommLedger()
    runs: list[dict[str, Any]] = []
    if progress.resumed:
        snap = progress.state
        results.rows = [dict(r) for r in snap.get("rows", [])]
        ledger.extend(CommLedger.from_records(snap.get("ledger", [])).rows)
        runs = [dict(r) for r in snap.get("runs", [])]
        results.write_metrics()
        results.write_ledger(ledger)
    tasks = build_tasks(settings.link)
    progress.restore_rng()
    links = [(r, m) for r in settings.bandwidth_ratios for m in settings.methods]
    for i, (ratio, method) in enumerate(links):
        unit = f"{i}:{method}/R={ratio_label(ratio)}"
        if progress.is_done(unit):
            continue
        runs.append(_train_link(grid, settings, method, ratio, ledger, results))
        results.write_ledger(ledger)
        progress.save(unit, {"rows": results.rows, "ledger": ledger.to_records(), "runs": runs})
    final = final_rows(results.rows)
    gain_rows = gains(final, tasks)
    folder = results.dir
    write_csv(folder / "final.csv", final)
    write_csv(folder / "gains.csv", gain_rows)
    table = table_markdown(final, tasks)
    gain_table = gains_markdown(gain_rows, tasks)
    with atomic_write(folder / "table.md") as fh:
        fh.write(table)
    with atomic_write(folder / "gains.md") as fh:
        fh.write(gain_table)
    plots = plot_all(folder, final, tasks)
    results.write_ledger(ledger)
    wall = time.perf_counter() - progress.t_start
    summary = {
        "results_dir": str(folder.resolve()),
        "wall_time_s": wall,
        "source_dims": SOURCE_DIMS,
        "channel_uses_per_image": {
            ratio_label(r): symbols_for_ratio(r, SOURCE_DIMS) for r in settings.bandwidth_ratios
        },
        "runs": runs,
        "final": final,
        "gains": gain_rows,
        "paper_claim_gain_pct": list(PAPER_CLAIM),
        "plots": plots,
        "ledger": ledger.summary(),
    }
    results.write_summary(summary)
    log(INFO, "[multitask] final (last round):\n%s", table)
    log(
        INFO,
        "[multitask] GAI's relative gain (paper: +%.2f to +%.1f %%):\n%s",
        *PAPER_CLAIM,
        gain_table,
    )
    log(INFO, "[multitask] %.1f s, results in %s", wall, folder.resolve())
    progress.finish()
    return summary
