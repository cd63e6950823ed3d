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
from flwr_semcom.multitask.settings import check_multitask_config, ratio_label, source_dims
from flwr_semcom.multitask.system import symbols_for_ratio
from flwr_semcom.multitask.training import build_model, build_tasks
from flwr_semcom.results import Results, new_run_dir, write_csv
from simulations.common import output_root, wait_for_nodes
from strategies.fedavg_multitask import FedAvgMultitask

__all__ = ["num_nodes", "run"]


def num_nodes(cfg: DictConfig) -> int:
    """The launcher starts one SuperNode per device."""
    return int(cfg.multitask.num_devices)


def run(grid: Grid, cfg: DictConfig, context: Context) -> dict[str, Any]:
    """Train and evaluate every (R, method); write the results folder; return the summary."""
    check_multitask_config(cfg)
    torch.set_num_threads(int(cfg.num_threads))
    t0 = time.perf_counter()
    m = cfg.multitask
    results = Results(new_run_dir(output_root(cfg), str(cfg.experiment.name)))
    results.save_config(cfg)
    devices = int(m.num_devices)
    wait_for_nodes(grid, devices, timeout=120.0)
    ledger = CommLedger()
    tasks = build_tasks(cfg)
    snrs = [float(s) for s in cfg.channel.snr_db]
    runs = []
    for ratio in [float(r) for r in m.bandwidth_ratios]:
        for method in [str(x) for x in m.methods]:
            model = build_model(cfg, method, ratio, seed=int(cfg.seed))
            label = f"{method}/R={ratio_label(ratio)}"
            params = sum(p.numel() for p in model.parameters())
            log(
                INFO,
                "[multitask] %s: k=%d channel uses per image (%s), %d parameters, %d devices",
                label,
                model.num_symbols,
                "+".join(str(k) for k in model.symbols),
                params,
                devices,
            )
            strategy = FedAvgMultitask(
                method,
                ratio,
                tasks,
                snrs,
                devices,
                ledger,
                on_round=results.add,
                label=label,
                num_rounds=int(m.rounds),
            )
            t_run = time.perf_counter()
            strategy.start(
                grid,
                P.to_record(model.state_dict()),
                num_rounds=int(m.rounds),
                timeout=float(m.timeout),
                train_config=ConfigRecord({}),
                evaluate_config=ConfigRecord({}),
            )
            runs.append(
                {
                    "method": method,
                    "ratio": ratio,
                    "R": ratio_label(ratio),
                    "channel_uses_per_image": model.num_symbols,
                    "parameters": params,
                    "wall_s": time.perf_counter() - t_run,
                }
            )
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
    wall = time.perf_counter() - t0
    summary = {
        "results_dir": str(folder.resolve()),
        "wall_time_s": wall,
        "source_dims": source_dims(cfg),
        "channel_uses_per_image": {
            ratio_label(float(r)): symbols_for_ratio(float(r), source_dims(cfg))
            for r in m.bandwidth_ratios
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
    return summary
