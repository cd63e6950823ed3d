"""Experiment ``node_check``: ask every node what it runs on, write it to a results folder.

Run it first on a new deployment (``semcom-run --experiment node_check``) to see that every
SuperNode answers, with which torch/flwr versions, and whether it will use a GPU.
"""

from __future__ import annotations

import time
from logging import INFO
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from omegaconf import DictConfig

from flwr_semcom.results import Results, new_run_dir
from flwr_semcom.runtime.messaging import ClientInfo, collect
from simulations.common import output_root, wait_for_nodes


def run(grid: Grid, cfg: DictConfig, context: Context) -> dict[str, Any]:
    nodes = wait_for_nodes(grid, int(cfg.experiment.num_nodes), timeout=float(cfg.experiment.wait))
    msgs = [
        Message(
            RecordDict({"config": ConfigRecord({"device": str(cfg.device)})}), n, "query.node_info"
        )
        for n in nodes
    ]
    t0 = time.monotonic()
    probes = [ClientInfo(n, -1, "?") for n in nodes]
    replies, failures = collect(
        grid, msgs, probes, action="query.node_info", timeout=float(cfg.experiment.wait)
    )
    round_trip = time.monotonic() - t0
    answered = [r for r in replies if r is not None]
    log(INFO, "node_check: %d replies in %.2f s (one query round trip)", len(answered), round_trip)
    results = Results(new_run_dir(output_root(cfg), str(cfg.experiment.name)))
    results.save_config(cfg)
    for f in failures:
        log(INFO, "node %s failed (%s): %s", nodes[f.index], f.kind, f.reason)
    for r in answered:
        info = dict(r.content["info"])
        results.add({"node_id": r.metadata.src_node_id, **info})
        log(INFO, "node %s: %s", r.metadata.src_node_id, info)
    summary = {
        "nodes": len(nodes),
        "answered": len(answered),
        "failed": len(failures),
        "round_trip_s": round(round_trip, 3),
    }
    results.write_summary(summary)
    log(INFO, "results folder: %s", results.dir.resolve())
    if failures:
        raise RuntimeError(f"node_check: {summary}")
    return summary
