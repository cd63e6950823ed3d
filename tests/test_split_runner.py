"""The ``split_supervised`` runner (the README's main job) end to end on an in-process grid."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import compose_config
from flwr_semcom.inprocess import InProcessGrid
from simulations.experiments.split_supervised import run


def test_runner_writes_a_complete_results_folder(tmp_path: Path) -> None:
    overrides = (
        "data.num_samples=40 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
        f"strategy.batch_size=8 strategy.rounds=2 paths.output_dir={tmp_path}/out"
    )
    cfg = compose_config("split_supervised", overrides)
    nodes = [{"partition-id": i, "num-partitions": 2} for i in range(2)]
    grid = InProcessGrid(
        client_app, nodes, {"experiment": "split_supervised", "overrides": overrides}
    )
    summary = run(grid, cfg, grid.server_context())
    (folder,) = (tmp_path / "out" / "split_supervised").iterdir()
    for name in (
        "config.yaml",
        "metrics.csv",
        "metrics.json",
        "summary.json",
        "ledger.csv",
        "ledger.json",
        "accuracy_vs_round.png",
        "accuracy_vs_bits.png",
    ):
        assert (folder / name).is_file(), name
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2]
    for key in (
        "stage",
        "method",
        "snr_db",
        "label_fraction",
        "loss",
        "train_accuracy",
        "test_accuracy",
        "cum_up_bytes",
        "cum_down_bytes",
        "cum_channel_uses",
        "wall_time_s",
    ):
        assert key in rows[0], key
    assert rows[0]["stage"] == "finetune" and rows[0]["method"] == "supervised"
    assert int(rows[1]["cum_up_bytes"]) > int(rows[0]["cum_up_bytes"]) > 0
    saved = json.loads((folder / "summary.json").read_text())
    assert saved["total_up_bytes"] == summary["total_up_bytes"] == int(rows[1]["cum_up_bytes"])
    ledger = json.loads((folder / "ledger.json").read_text())
    assert sum(t["bytes"] for t in ledger["transfers"] if t["direction"] == "down") == int(
        rows[1]["cum_down_bytes"]
    )
