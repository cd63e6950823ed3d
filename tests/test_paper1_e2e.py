"""Paper 1 end to end on tiny data (InProcessGrid): results folder, summary, ledger, FedAvg."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import compose_config
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.paper1 import figures
from flwr_semcom.paper1.data import stage_ids
from flwr_semcom.paper1.models import build_ssl_transmitter
from flwr_semcom.paper1.stage2 import finetune_server
from flwr_semcom.split.schedule import train_batches
from flwr_semcom.split.settings import split_kwargs
from simulations.experiments import multimodal
from strategies.split_training import SplitTraining

TINY = (
    "data.num_samples=60 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "model.widths=[4,8] strategy.batch_size=8 strategy.rounds=2 strategy.eval_batch_size=16 "
    "strategy.steps_per_message=2 pretrain.rounds=2 pretrain.batch_size=8 "
    "pretrain.steps_per_message=2 pretrain.projector=[8,8]"
)


def _run(tmp_path: Path, extra: str) -> tuple[dict[str, Any], InProcessGrid, str]:
    over = f"{TINY} paths.output_dir={tmp_path} {extra}"
    cfg = compose_config("multimodal", over)
    n = multimodal.num_nodes(cfg)
    nodes = [{"partition-id": i, "num-partitions": n} for i in range(n)]
    grid = InProcessGrid(client_app, nodes, {"experiment": "multimodal", "overrides": over})
    summary = multimodal.run(grid, cfg, grid.server_context())
    return summary, grid, over


def test_four_methods_write_the_documented_results_folder(tmp_path: Path) -> None:
    summary, _, over = _run(tmp_path, "")
    run_dir = Path(summary["results_dir"])
    for name in (
        "config.yaml",
        "metrics.csv",
        "metrics.json",
        "summary.json",
        "ledger.csv",
        "ledger.json",
        "accuracy_vs_rounds.png",
        "accuracy_vs_bits.png",
    ):
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert set(on_disk["methods"]) == {"decur", "simclr", "barlow_twins", "supervised"}
    assert isinstance(on_disk["target_accuracy"], float)
    assert on_disk["target_accuracy"] == on_disk["methods"]["supervised"]["final_accuracy"]
    for m in on_disk["methods"].values():
        assert m["status"] == "ok"
        assert isinstance(m["best_accuracy"], float)
        assert m["stage2_rounds_to_target"] is None or isinstance(m["stage2_rounds_to_target"], int)
        assert isinstance(m["stage1_bits"], float)

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    # rounds / bits to target and the ratio, recomputed from metrics.csv: the first Stage II
    # round whose test accuracy is >= the target, and its cumulative Stage II bits
    target = on_disk["target_accuracy"]
    reached: dict[str, tuple[int, float] | None] = {}
    for label in on_disk["methods"]:
        curve = [r for r in rows if r["method"] == label and r["stage"] == "finetune"]
        assert [int(r["round"]) for r in curve] == [1, 2]
        hit = next((r for r in curve if float(r["test_accuracy"]) >= target - 1e-9), None)
        reached[label] = None if hit is None else (int(hit["round"]), float(hit["bits"]))
        m = on_disk["methods"][label]
        assert (m["stage2_rounds_to_target"], m["stage2_bits_to_target"]) == (
            (None, None) if hit is None else reached[label]
        )
    sup, dec = reached["supervised"], reached["decur"]
    assert sup is not None  # the target is supervised's own final accuracy
    ratio = on_disk["decur_to_supervised_bits_ratio"]
    assert ratio == (None if dec is None else pytest.approx(dec[1] / sup[1]))
    for col in (
        "round",
        "stage",
        "method",
        "snr_db",
        "label_fraction",
        "loss",
        "test_accuracy",
        "up_bytes",
        "down_bytes",
        "channel_uses",
        "wall_time_s",
    ):
        assert col in rows[0], col
    assert {(r["method"], r["stage"]) for r in rows} == {
        ("decur", "pretrain"),
        ("decur", "finetune"),
        ("simclr", "pretrain"),
        ("simclr", "finetune"),
        ("barlow_twins", "pretrain"),
        ("barlow_twins", "finetune"),
        ("supervised", "finetune"),
    }

    # Stage I bits: local placement 0; split: p (B×8) and the intra share (B×1) up, the same
    # sizes down, float32, per client and batch
    cfg = compose_config("multimodal", over)
    ids = stage_ids(cfg)
    batches = [
        b for r in (1, 2) for b in train_batches(ids.train, 8, seed=0, round_=r, stage="pretrain")
    ]
    samples = sum(b.size for b in batches)
    assert on_disk["methods"]["decur"]["stage1_bits"] == 8 * 2 * 2 * samples * (8 + 1) * 4
    assert on_disk["methods"]["simclr"]["stage1_bits"] == 0.0
    assert on_disk["methods"]["barlow_twins"]["stage1_bits"] == 0.0
    assert on_disk["methods"]["supervised"]["stage1_bits"] == 0.0
    # Stage II: ẑ (B×2k = 8 reals) up, ∂L/∂ẑ down, per client; k = 4 channel uses per sample
    ft = [
        b
        for r in (1, 2)
        for b in train_batches(ids.labelled, 8, seed=0, round_=r, stage="finetune")
    ]
    n2 = sum(b.size for b in ft)
    for m in on_disk["methods"].values():
        assert m["stage2_bits"] == 8 * 2 * 2 * n2 * 8 * 4
        assert m["stage2_channel_uses"] == 2 * n2 * 4  # evaluation is ledger stage "eval"

    # the Fig. 4 / 5 panels and grid table from the folder
    assert figures.main([str(tmp_path)]) == 0
    assert (tmp_path / "fig_labels100_rounds.png").is_file()
    assert (tmp_path / "fig_labels100_bits.png").is_file()
    grid_rows = list(csv.DictReader((tmp_path / "paper1_grid.csv").open()))
    assert {r["method"] for r in grid_rows} == {"decur", "simclr", "barlow_twins", "supervised"}


def test_server_placement_counts_the_encoder_download(tmp_path: Path) -> None:
    summary, _, over = _run(
        tmp_path, "pretrain.placement=server experiment.methods=[decur,supervised]"
    )
    cfg = compose_config("multimodal", over)
    nbytes = sum(
        sum(
            t.numel() * t.element_size()
            for t in build_ssl_transmitter(cfg, m).encoder.state_dict().values()
        )
        for m in ("rgb", "depth")
    )
    assert summary["methods"]["decur"]["placement"] == "server"
    assert summary["methods"]["decur"]["stage1_bits"] == 8 * nbytes


def test_fedavg_keeps_one_encoder_per_modality(tmp_path: Path) -> None:
    summary, grid, over = _run(
        tmp_path,
        "data.devices_per_modality=2 experiment.methods=[barlow_twins] "
        "experiment.target_accuracy=0.5 finetune.precise_bn_samples=0",
    )
    assert summary["methods"]["barlow_twins"]["stage1_bits"] > 0  # parameters up and down
    cfg = compose_config("multimodal", over)
    probe = SplitTraining(
        finetune_server(cfg, clients=4), client_task="p1_finetune", **split_kwargs(cfg)
    )
    probe.discover(grid)
    states = probe.fetch_client_states(grid)
    for a, b in ((0, 1), (2, 3)):  # rgb-0/rgb-1 and depth-0/depth-1
        for key in states[a]:
            assert torch.allclose(states[a][key].double(), states[b][key].double()), key
    assert not torch.allclose(
        states[0]["transmitter.head.linear.weight"], states[2]["transmitter.head.linear.weight"]
    )


def test_divergence_is_recorded_and_fails_the_run(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="method 'supervised', stage 'finetune', round 1"):
        # at -800 dB the channel noise (σ = 1e40) overflows float32: a non-finite uplink
        _run(tmp_path, "experiment.methods=[supervised] channel.snr_db=-800")
    summary, _, _ = _run(
        tmp_path,
        "experiment.methods=[supervised] channel.snr_db=-800 experiment.fail_on_divergence=false",
    )
    m = summary["methods"]["supervised"]
    assert m["status"] == "diverged" and "non-finite" in m["error"]
