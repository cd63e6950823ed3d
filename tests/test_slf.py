"""SLF (paper 2) through Flower messages in-process: accounting, freezing, recovery, FedAvg.

A tiny config (few images, a handful of steps) on the real MNIST / CIFAR-10 files in
../shared/data; the ClientApp handlers run behind :class:`InProcessGrid`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from flwr.clientapp import ClientApp

from flwr_semcom.accounting import CommLedger
from flwr_semcom.alignment import MODEL_KEY, add_slf_client
from flwr_semcom.alignment.recovery import RecoveryModel
from flwr_semcom.config import ConfigError, compose_config, config_from_run_config
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.slf.factory import device_from_context
from flwr_semcom.slf.settings import check_slf_config
from simulations.experiments.slf_table1 import TABLE_COLUMNS, install_pair, run, sweep_points
from strategies.fedavg_alignment import FedAvgAlignment
from strategies.slf import Link, SLFStrategy

SMALL = (
    "data.max_train=96 data.max_test=48 data.cifar_per_class=8 data.extra_train=null "
    "strategy.batch_size=16 strategy.pretrain.steps=3 strategy.classifier.steps=3 "
    "strategy.finetune.steps=2 strategy.finetune.reinit_steps=2 strategy.fedavg.rounds=2 "
    "strategy.fedavg.local_steps=1 "
    "strategy.sweep.crossover=[0.02] strategy.sweep.epsilon=[0.5]"
)
RECOVERY = RecoveryModel(dl_mbps=10.0, ul_mbps=5.0, device_tflops=1.0)
RECEIVER_PARAMS = 2048 + 18496 + 90200 + 1409  # codebook + decoder of the default sizes
MODEL_PARAMS = 9552 + RECEIVER_PARAMS


def _app() -> ClientApp:
    return add_slf_client(ClientApp(), device_from_context)


@pytest.fixture(scope="module")
def run_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("slf")
    return {"experiment": "slf_table1", "overrides": f"{SMALL} paths.output_dir={out}"}


@pytest.fixture
def grid(run_config: dict[str, str]) -> InProcessGrid:
    nodes = [{"partition-id": p, "num-partitions": 2} for p in (0, 1)]
    return InProcessGrid(_app(), nodes, run_config)


def _state(grid: InProcessGrid, node: int) -> dict[str, torch.Tensor]:
    return grid.contexts[node].state.array_records[MODEL_KEY].to_torch_state_dict()


def _channel_link(grid: InProcessGrid, tag: str = "") -> Link:
    cfg = config_from_run_config(grid.server_context().run_config)
    point = sweep_points(cfg)[0]
    assert point.case == "channel" and point.table
    i, j = install_pair(grid, sorted(grid.get_node_ids()), cfg, point, 60.0)
    return Link(i, j, point.crossover, "mnist", point.epsilon, 7, tag)


def test_slf_upload_freezing_and_recovery_time(grid: InProcessGrid) -> None:
    ledger = CommLedger()
    unfrozen, recovery, flops = [], [], []
    for n in range(5):
        link = _channel_link(grid, tag=f"n{n}")
        i, j = link.transmitter, link.receiver
        before_i, before_j = _state(grid, i), _state(grid, j)
        res = SLFStrategy(n, RECOVERY, ledger=ledger, seed=3).start(grid, link)
        after_i, after_j = _state(grid, i), _state(grid, j)

        # upload = exactly the unfrozen float32 parameters; download = j's codebook + decoder
        assert res.upload_bytes == 4 * res.unfrozen_params
        assert res.download_bytes == 4 * RECEIVER_PARAMS
        up = ledger.total(stage="align", direction="up", client=f"n{n}/transmitter")
        down = ledger.total(stage="align", direction="down", client=f"n{n}/transmitter")
        assert (up, down) == (res.upload_bytes, res.download_bytes)
        assert ledger.total(field="channel_uses", stage="eval", client=f"n{n}/transmitter") == (
            res.num_examples * 49
        )

        # the last n layers (counting from the last decoder conv) are bit-identical to j's
        # originals at both ends; every unfrozen receiver tensor at j is i's fine-tuned one
        frozen_prefixes = ["decoder.4.", "decoder.2.", "decoder.0.", "codebook."][:n]
        for key, value in before_j.items():
            if not key.startswith(("codebook.", "decoder.")):
                assert torch.equal(after_j[key], value), key  # j's encoder is untouched
            elif key.startswith(tuple(frozen_prefixes)):
                assert torch.equal(after_j[key], value), key
                assert torch.equal(after_i[key], value), key
            else:
                assert torch.equal(after_j[key], after_i[key]), key
                assert not torch.equal(after_j[key], value), key
        assert not torch.equal(after_i["encoder.0.weight"], before_i["encoder.0.weight"])
        unfrozen.append(res.unfrozen_params)
        recovery.append(res.recovery_time_s)
        flops.append(res.flops)
        assert 0.0 <= res.accuracy <= 1.0 and res.mse > 0.0

    assert unfrozen == [RECEIVER_PARAMS, 110744, 20544, 2048, 0]
    assert all(a > b for a, b in zip(unfrozen, unfrozen[1:]))
    assert all(a > b for a, b in zip(recovery, recovery[1:]))
    assert all(a >= b for a, b in zip(flops, flops[1:])) and flops[0] > flops[3]


def test_n_out_of_range_is_a_clear_error(grid: InProcessGrid, run_config: dict[str, str]) -> None:
    link = _channel_link(grid)
    with pytest.raises(RuntimeError, match=r"freeze_layers \(n\) must be in \[0, 4\].*got 7"):
        SLFStrategy(7, RECOVERY).start(grid, link)
    with pytest.raises(ConfigError, match=r"freeze_layers \(n\) must be in \[0, 4\].*got 5"):
        check_slf_config(compose_config("slf_table1", ["strategy.freeze_layers=[0,5]"]))


def test_fedavg_alignment_counts_every_model_transfer(grid: InProcessGrid) -> None:
    ledger = CommLedger()
    link = _channel_link(grid, tag="fa")
    out = FedAvgAlignment(link, RECOVERY, ledger=ledger).run(grid, rounds=2)
    model_bytes = 4 * MODEL_PARAMS
    # up: round-0 upload + 2 rounds x 2 clients; down: 2 rounds x 2 clients + final download
    assert out.model_params == MODEL_PARAMS
    assert out.upload_bytes == 6 * model_bytes == ledger.total(stage="align", direction="up")
    assert out.download_bytes == 6 * model_bytes == ledger.total(stage="align", direction="down")
    assert [h["round"] for h in out.history] == [1.0, 2.0]
    assert out.history[-1]["upload_bytes"] == out.upload_bytes
    # both nodes end with the same global model: aligned by construction
    si, sj = _state(grid, link.transmitter), _state(grid, link.receiver)
    assert all(torch.equal(si[k], sj[k]) for k in si)
    expected = (
        RECOVERY.upload_s(model_bytes)
        + 2 * (RECOVERY.download_s(model_bytes) + RECOVERY.upload_s(model_bytes))
        + RECOVERY.compute_s(out.flops)
        + RECOVERY.download_s(model_bytes)
    )
    assert out.recovery_time_s == pytest.approx(expected)


def test_setup_needs_partition_ids(run_config: dict[str, str]) -> None:
    grid = InProcessGrid(_app(), [{}, {}], run_config)
    cfg = config_from_run_config(run_config)
    with pytest.raises(RuntimeError, match="partition-id"):
        install_pair(grid, sorted(grid.get_node_ids()), cfg, sweep_points(cfg)[0], 60.0)
    with pytest.raises(RuntimeError, match="send train.slf_setup first"):
        SLFStrategy(1, RECOVERY).download(grid, Link(1000, 1001, 0.0, "mnist", 0.0))


def test_runner_writes_table1(run_config: dict[str, str], grid: InProcessGrid) -> None:
    cfg = config_from_run_config(run_config)
    summary = run(grid, cfg, grid.server_context())
    folder = Path(summary["results_dir"])
    with open(folder / "table1.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[: len(TABLE_COLUMNS)] == list(TABLE_COLUMNS)
    # 2 cases x 2 tasks x (SLF n = 0..4 + FedAvg)
    assert len(rows) == 24
    assert {(r["case"], r["task"]) for r in rows} == {
        (c, t) for c in ("channel", "source") for t in ("reconstruction", "classification")
    }
    for r in rows:
        if r["method"] == "slf":
            assert int(r["upload_bytes"]) == 4 * int(r["unfrozen_params"])
        # the validation part is scored beside the test part (reporting only)
        assert 0.0 <= float(r["val_accuracy"]) <= 1.0 and float(r["val_mse"]) >= 0.0
        assert 0.0 <= float(r["baseline_val_accuracy"]) <= 1.0
    table = (folder / "table1.md").read_text()
    assert "| | n = 0 | n = 1 | n = 2 | n = 3 | n = 4 | FedAvg |" in table
    assert "source dissimilarity (T3 → T1)" in table and "Accuracy (%), paper" in table
    for name in ("fig3_mse_vs_p.png", "fig3_accuracy_vs_eps.png", "bytes_vs_accuracy_channel.png",
                 "ledger.csv", "summary.json", "sweep.csv", "fedavg_history.csv"):  # fmt: skip
        assert (folder / name).is_file(), name
    assert summary["slf_runs"] == 10 and summary["fedavg_runs"] == 2
