"""Experiment ``multimodal``: paper 1 end to end, Stage I then Stage II, for several methods.

Paper 1 (Zhao et al., arXiv 2503.13940), Algorithm 1 and Sec. IV (Fig. 4 full labels, Fig. 5
50 % labels). For every method of ``experiment.methods`` (DeCUR, SimCLR, Barlow Twins,
supervised) in one Flower run, with the client state reset between methods:

1. Stage I (label-free, every training scene) in the method's placement
   (:mod:`strategies.pretrain`; none for ``supervised``);
2. Stage II (labelled scenes) through the split runtime: devices send channel-corrupted
   features, the server decoder works on their concatenation and returns gradients;
   FedAvg per modality when ``data.devices_per_modality`` > 1; test and validation
   accuracy after every round (``data.val_fraction``: the validation scenes select the round).

The results folder (``outputs/<experiment.name>/<timestamp>/``, schema in docs/paper1.md)
holds ``config.yaml``, ``metrics.csv``/``.json`` (one row per method, stage and round),
``summary.json``, ``ledger.csv``/``.json`` (every transfer, with its method) and the plots
``accuracy_vs_rounds.png`` / ``accuracy_vs_bits.png`` (one line per method). The run ends
with a table: method, validation-selected round, test accuracy there and at the final round
(never the test maximum), Stage-II rounds and bits to the target accuracy (default: the
supervised baseline's final accuracy), Stage-I bits.
"""

from __future__ import annotations

import math
import time
from logging import INFO
from typing import Any

import torch
from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid
from omegaconf import DictConfig

from flwr_semcom.accounting import CommLedger
from flwr_semcom.paper1.data import num_devices
from flwr_semcom.paper1.settings import (
    METHOD_LABELS,
    check_pretrain_config,
    method_key,
    resolve_placement,
)
from flwr_semcom.results import Results
from simulations.experiments._paper1_outputs import RunLog, plot_accuracy, write_ledger
from simulations.experiments._paper1_stages import Paper1Run
from simulations.experiments._paper1_summary import stage_bits, summarize, table
from simulations.experiments._resume import Progress

__all__ = ["num_nodes", "run", "stage_bits", "summarize"]


def num_nodes(cfg: DictConfig) -> int:
    """SuperNodes this experiment needs: one per device (modalities × devices per modality).

    ``semcom-run`` calls it before starting Flower, so it also checks the paper-1 settings
    (``ConfigError`` naming the key: the launcher exits 2 at once).
    """
    check_pretrain_config(cfg)
    for method in cfg.experiment.get("methods", []):
        resolve_placement(method_key(str(method)), str(cfg.pretrain.placement))
    return num_devices(cfg)


def _restore(progress: Progress, results: Results, state: Paper1Run) -> None:
    """Rows, ledgers and method entries of the finished units (``progress.state``)."""
    snap = progress.state
    results.rows = [dict(r) for r in snap.get("rows", [])]
    state.ledgers.update(
        {k: CommLedger.from_records(v) for k, v in snap.get("ledgers", {}).items()}
    )
    state.methods.update({k: dict(v) for k, v in snap.get("methods", {}).items()})
    results.write_metrics()
    write_ledger(results, state.ledgers)


def _snapshot(results: Results, state: Paper1Run, **extra: Any) -> dict[str, Any]:
    return {
        "rows": results.rows,
        "ledgers": {k: v.to_records() for k, v in state.ledgers.items()},
        "methods": state.methods,
        **extra,
    }


def run(grid: Grid, cfg: DictConfig, context: Context) -> dict[str, Any]:
    """Run every method of ``experiment.methods``; write the results folder; log the table.

    Units (:mod:`simulations.experiments._resume`): ``<method>/stage1`` (Stage I and the
    Stage II encoders the devices start from, fetched from them) and ``<method>`` (Stage
    II). With ``reliability.resume`` the finished units are skipped and the interrupted one
    runs again from its start. ``context`` gives the run's experiment and overrides (the
    clients compose the same config from their own run config).
    """
    check_pretrain_config(cfg)
    torch.set_num_threads(int(cfg.num_threads))
    methods = [method_key(m) for m in cfg.experiment.methods]
    progress = Progress.open(cfg, context)
    results = Results(progress.dir)
    if progress.finished:
        return progress.summary()
    if not progress.resumed:
        results.save_config(cfg)
    snr_db = float(cfg.channel.get("snr_db", math.nan))
    label_fraction = float(cfg.data.label_fraction)
    run_log = RunLog(results, snr_db=snr_db, label_fraction=label_fraction)
    run_log.t_start = progress.t_start
    state = Paper1Run(grid, cfg, run_log)
    if progress.resumed:
        _restore(progress, results, state)
    log(
        INFO,
        "paper 1: methods %s | Stage I %d rounds | Stage II %d rounds | %d devices | results %s",
        ", ".join(METHOD_LABELS[m] for m in methods),
        int(cfg.pretrain.rounds),
        int(cfg.strategy.rounds),
        len(state.clients),
        results.dir,
    )
    progress.restore_rng()
    for method in methods:
        label = METHOD_LABELS[method]
        if progress.is_done(label):
            continue
        if progress.is_done(f"{label}/stage1"):
            go = state.methods[label]["status"] == "ok"
            if go:
                state.restore_finetune(progress.state["finetune"])
        else:
            go = state.run_stage1(method)
            write_ledger(results, state.ledgers)
            finetune = state.finetune_states() if go else {}
            progress.save(f"{label}/stage1", _snapshot(results, state, finetune=finetune))
        if go:
            state.run_stage2(method)
        write_ledger(results, state.ledgers)
        progress.save(label, _snapshot(results, state))
    target = cfg.experiment.get("target_accuracy")
    summary = summarize(
        results.rows, state.methods, state.ledgers, None if target is None else float(target)
    )
    summary.update(
        {
            "experiment": str(cfg.experiment.name),
            "snr_db": snr_db,
            "channel": str(cfg.channel.name),
            "label_fraction": label_fraction,
            "devices_per_modality": int(cfg.data.devices_per_modality),
            "wall_time_s": time.perf_counter() - progress.t_start,
            "results_dir": str(results.dir.resolve()),
        }
    )
    results.write_summary(summary)
    plot_accuracy(results, snr_db=cfg.channel.get("snr_db", "?"), label_fraction=label_fraction)
    for line in table(summary):
        log(INFO, "%s", line)
    log(INFO, "results folder: %s", results.dir.resolve())
    progress.finish()
    diverged = [m for m, i in summary["methods"].items() if i["status"] != "ok"]
    if diverged and bool(cfg.experiment.get("fail_on_divergence", True)):
        raise RuntimeError(
            "training diverged: "
            + "; ".join(str(summary["methods"][m].get("error")) for m in diverged)
        )
    return summary
