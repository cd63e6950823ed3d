"""SLF building blocks: recovery-time model, checkpoint cache, data, training, report, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from flwr_semcom.alignment.loops import batch_indices
from flwr_semcom.alignment.recovery import RecoveryModel
from flwr_semcom.config import ConfigError, compose_config
from flwr_semcom.models.vqvae import VQVAETransceiver
from flwr_semcom.slf.cache import checkpoint_path, load_or_train, spec_hash
from flwr_semcom.slf.data import classifier_data, node_data, num_classes
from flwr_semcom.slf.report import table1_markdown
from flwr_semcom.slf.settings import cache_dir, check_slf_config, data_key, pretraining
from flwr_semcom.slf.training import train_transceiver

SMALL = ["data.max_train=64", "data.max_test=32", "data.cifar_per_class=6"]


def test_recovery_time_formula() -> None:
    r = RecoveryModel(dl_mbps=8.0, ul_mbps=4.0, device_tflops=2.0)
    # 1 MB down at 8 Mbps = 1 s; 2e12 FLOPs at 2 TFLOPS = 1 s; 0.5 MB up at 4 Mbps = 1 s
    assert r.slf(1_000_000, 2e12, 500_000) == pytest.approx(3.0)
    assert r.download_s(0) == r.upload_s(0) == r.compute_s(0) == 0.0
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="dl_mbps"):
            RecoveryModel(dl_mbps=bad, ul_mbps=1.0, device_tflops=1.0)  # type: ignore[arg-type]


def test_cache_trains_once_and_loads_safely(tmp_path: Path) -> None:
    calls: list[int] = []

    def build() -> nn.Linear:
        return nn.Linear(3, 2)

    def train(m: nn.Linear) -> dict[str, int]:
        calls.append(1)
        with torch.no_grad():
            m.weight.fill_(0.5)
        return {"steps": 1}

    spec = {"name": "toy", "lr": 0.1}
    first, cached1 = load_or_train(tmp_path, "toy", spec, build, train)
    second, cached2 = load_or_train(tmp_path, "toy", dict(reversed(spec.items())), build, train)
    assert (cached1, cached2, len(calls)) == (False, True, 1)  # key order does not matter
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
    path = checkpoint_path(tmp_path, "toy", spec)
    assert path.name == f"toy-{spec_hash(spec)}.pt" and len(spec_hash(spec)) == 16
    assert set(torch.load(path, weights_only=True)) == {"weight", "bias"}
    assert json.loads(path.with_suffix(".json").read_text())["spec"] == spec
    third, cached3 = load_or_train(tmp_path, "toy", {**spec, "lr": 0.2}, build, train)
    assert not cached3 and len(calls) == 2  # another config, another checkpoint
    assert not list(tmp_path.glob(".toy-*"))  # no temporary files left


def test_cache_dir_is_absolute_under_output_dir(tmp_path: Path) -> None:
    cfg = compose_config("slf_table1", [f"paths.project_root={tmp_path}"])
    assert cache_dir(cfg) == tmp_path / "outputs" / "cache" / "slf"
    cfg = compose_config("slf_table1", [f"strategy.cache_dir={tmp_path / 'c'}"])
    assert cache_dir(cfg) == tmp_path / "c"


def test_node_data_mnist_and_mixture() -> None:
    key = data_key(compose_config("slf_table1", [*SMALL, "data.val_fraction=0"]))
    train = node_data(key, "mnist", 0.0, "train")
    test = node_data(key, "mnist", 0.0, "test")
    assert train.images.shape == (64, 1, 28, 28) and test.images.shape == (32, 1, 28, 28)
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    all_cifar = node_data(key, "mixed", 1.0, "test")
    assert int(all_cifar.labels.min()) >= 10 and num_classes("mixed") == 20
    half = node_data(key, "mixed", 0.5, "train")
    assert (half.labels < 10).any() and (half.labels >= 10).any()
    both = classifier_data(key, "mixed")
    # 64 MNIST + 10 classes x (6 - round(0.2 * 6)) CIFAR-10 training images
    assert len(both) == 64 + 50 and int(both.labels.max()) <= 19
    with pytest.raises(ValueError, match="source"):
        node_data(key, "svhn", 0.0, "train")


def test_batches_have_a_fixed_size() -> None:
    g = torch.Generator().manual_seed(0)
    batches = list(batch_indices(10, 4, 5, g))
    assert len(batches) == 5 and all(len(b) == 4 for b in batches)
    assert len(set(torch.cat(batches[:2]).tolist())) == 8  # no repeats inside an epoch


def test_finetune_keeps_frozen_layers_and_counts_flops() -> None:
    torch.manual_seed(0)
    model = VQVAETransceiver()
    model.freeze_last(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train_transceiver(
        model, torch.rand(32, 1, 28, 28), steps=2, lr=1e-2, batch_size=16, crossover=0.1,
        beta=0.25, seed=0,
    )  # fmt: skip
    after = model.state_dict()
    for key in before:
        same = torch.equal(before[key], after[key])
        assert same == key.startswith("decoder."), key
    assert stats.steps == 2 and stats.flops == 2 * stats.flops_per_step > 0
    model.freeze_last(0)
    full = train_transceiver(
        model, torch.rand(32, 1, 28, 28), steps=1, lr=1e-2, batch_size=16, crossover=0.1,
        beta=0.25, seed=0,
    )  # fmt: skip
    assert full.flops_per_step > stats.flops_per_step  # weight gradients of the decoder


def test_config_checks() -> None:
    check_slf_config(compose_config("slf_table1"))
    with pytest.raises(ConfigError, match="strategy.cases.channel.receiver: unknown transceiver"):
        check_slf_config(compose_config("slf_table1", ["strategy.cases.channel.receiver=T9"]))
    with pytest.raises(ConfigError, match="channel.name"):
        check_slf_config(compose_config("slf_table1", ["channel=awgn"]))
    with pytest.raises(ConfigError, match="strategy.finetune.lr"):
        compose_config("slf_table1", ["strategy.finetune.lr=0"])
    with pytest.raises(ConfigError, match="strategy.recovery.ul_mbps"):
        compose_config("slf_table1", ["strategy.recovery.ul_mbps=-2"])
    with pytest.raises(ConfigError, match="strategy.timeout"):  # a key split learning shares
        check_slf_config(compose_config("slf_table1", ["strategy.timeout=0"]))


def test_table1_markdown_layout() -> None:
    rows = []
    for task in ("reconstruction", "classification"):
        for n in range(5):
            rows.append({
                "case": "channel", "task": task, "method": "slf", "n": n, "crossover": 0.05,
                "epsilon": 0.0, "unfrozen_params": 1000 * (4 - n), "upload_mb": 0.1 * (4 - n),
                "recovery_time_s": 1.0 + (4 - n), "mse": 0.01 * (n + 1), "accuracy": 0.99 - n / 100,
                "wall_time_s": 2.0, "baseline_mse": 0.2, "baseline_accuracy": 0.1,
            })  # fmt: skip
    text = table1_markdown(rows, range(5))
    lines = text.splitlines()
    assert lines[2] == "| | n = 0 | n = 1 | n = 2 | n = 3 | n = 4 | FedAvg |"
    assert "| Unfrozen parameters (K) | 4.0 | 3.0 | 2.0 | 1.0 | 0.0 | – |" in lines
    assert "| Unfrozen parameters (K), paper | 114.0 | 76.0 | 22.0 | 2.0 | 0.0 | – |" in lines
    assert "| Accuracy (%) | 99.00 | 98.00 | 97.00 | 96.00 | 95.00 | – |" in lines
    assert "| Accuracy (%), paper | 98.55 | 98.04 | 97.83 | 97.01 | – | – |" in lines
    assert "misaligned) MSE 0.2000, accuracy 10.00 %" in lines[0]


def test_pretraining_specs_are_the_cache_keys() -> None:
    """The typed settings carry exactly the values (and types) of the config: the cache keys."""
    cfg = compose_config("slf_table1", ["seed=5", "strategy.pretrain.lr=0.002"])
    pre = pretraining(cfg)
    spec = pre.transceiver_spec("T3")
    assert spec["model"] == {
        "name": "vqvae", "in_channels": 1, "enc_channels": [16, 32], "code_dim": 32,
        "codebook_size": 64, "dec_channels": [64, 88],
    }  # fmt: skip
    # run seed 5 retrains T3 with its seed 3 + 1000 x 5; the classifiers keep their own seed
    assert spec["env"] == {"source": "mixed", "epsilon": 0.5, "crossover": 0.0, "seed": 5003}
    assert spec["train"] == {"steps": 1000, "lr": 0.002, "batch_size": 64, "beta": 0.25}
    assert spec["data"]["root"] == data_key(cfg).root and spec["version"] == 1
    c = pre.classifier_spec("mixed")
    assert (c["seed"], c["model"], c["train"]["shift"]) == (
        0,
        {"channels": [32, 64], "hidden": 128},
        2,
    )
    assert sum(p.numel() for p in pre.new_transceiver().parameters()) == 121705
    assert pre.new_classifier("mixed").num_classes == 20
    with pytest.raises(ValueError, match="unknown transceiver 'T9'; valid names .*T1, T2, T3"):
        pre.transceiver_spec("T9")
