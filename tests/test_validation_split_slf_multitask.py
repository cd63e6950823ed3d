"""Validation parts of paper 2 (``slf_table1``) and paper 3 (``multitask``), issue #18.

Both experiments carve a seeded stratified validation part out of their *training* data
(``data.val_fraction`` / ``multitask.val_fraction``); nothing trains on it and nothing is
selected on the test part: the reported numbers are final values (last FedAvg round, the SLF
result of a fixed schedule), with the validation scores reported beside them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flwr_semcom.config import ConfigError, compose_config
from flwr_semcom.multitask import protocol as P
from flwr_semcom.multitask.data import full_data
from flwr_semcom.multitask.report import final_rows
from flwr_semcom.multitask.settings import settings_from_config
from flwr_semcom.multitask.training import build_tasks
from flwr_semcom.slf.data import classifier_data, node_data
from flwr_semcom.slf.settings import check_slf_config, data_key, pretraining

SLF_SMALL = ["data.max_train=64", "data.max_test=32", "data.cifar_per_class=6"]
MT_SMALL = ["multitask.num_samples=200"]


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r.numpy().tobytes()) for r in x.flatten(1)}


# --- boundaries of the two keys (documented range [0, 0.5]) ---------------------------------


@pytest.mark.parametrize("value", ["0", "0.5", "0.1"])
def test_val_fraction_boundaries_accepted(value: str) -> None:
    check_slf_config(compose_config("slf_table1", [f"data.val_fraction={value}"]))
    compose_config("multitask", [f"multitask.val_fraction={value}"])


@pytest.mark.parametrize("value", ["-0.01", "0.51", "true"])
def test_val_fraction_out_of_range_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^data.val_fraction: invalid value .*\[0, 0.5\]"):
        check_slf_config(compose_config("slf_table1", [f"data.val_fraction={value}"]))
    with pytest.raises(ConfigError, match=r"^multitask.val_fraction: invalid value .*\[0, 0.5\]"):
        compose_config("multitask", [f"multitask.val_fraction={value}"])


# --- paper 2: the validation part comes out of the training part -----------------------------


def test_slf_val_part_is_carved_from_training_only() -> None:
    old = data_key(compose_config("slf_table1", [*SLF_SMALL, "data.val_fraction=0"]))
    key = data_key(compose_config("slf_table1", [*SLF_SMALL, "data.val_fraction=0.25"]))
    for source, eps in (("mnist", 0.0),):
        train0 = node_data(old, source, eps, "train")
        train, val = node_data(key, source, eps, "train"), node_data(key, source, eps, "val")
        test0, test = node_data(old, source, eps, "test"), node_data(key, source, eps, "test")
        assert torch.equal(test.images, test0.images)  # the test part is untouched
        assert len(train) + len(val) == len(train0) == 64
        assert _rows(train.images) | _rows(val.images) == _rows(train0.images)
        assert not _rows(val.images) & _rows(train.images)
        assert set(val.labels.tolist()) == set(train0.labels.tolist())  # stratified: all classes
    # the classifiers train on the training part without the validation images
    assert len(classifier_data(key, "mnist")) == len(node_data(key, "mnist", 0.0, "train"))
    mixed_val = node_data(key, "mixed", 0.5, "val")
    assert (mixed_val.labels < 10).any() and (mixed_val.labels >= 10).any()
    with pytest.raises(ValueError, match="part 'val' needs data.val_fraction > 0"):
        node_data(old, "mnist", 0.0, "val")


def test_slf_cache_keys_without_validation_are_unchanged_and_seeds_retrain() -> None:
    zero = pretraining(compose_config("slf_table1", ["data.val_fraction=0"]))
    assert "val_fraction" not in zero.transceiver_spec("T1")["data"]  # earlier cache keys
    val = pretraining(compose_config("slf_table1", ["seed=2"]))
    assert val.transceiver_spec("T1")["data"]["val_fraction"] == 0.1
    assert val.transceiver_spec("T1")["env"]["seed"] == 2001
    assert zero.transceiver_spec("T1")["env"]["seed"] == 1
    assert val.classifier_spec("mnist")["seed"] == zero.classifier_spec("mnist")["seed"] == 0


# --- paper 3 ----------------------------------------------------------------------------------


def test_multitask_val_part_is_carved_from_training_only() -> None:
    spec0 = settings_from_config(
        compose_config("multitask", [*MT_SMALL, "multitask.val_fraction=0"])
    ).data
    spec = settings_from_config(compose_config("multitask", MT_SMALL)).data
    assert spec.val_fraction == 0.1
    train0, test0 = full_data(spec0, "train"), full_data(spec0, "test")
    train, val, test = (full_data(spec, p) for p in ("train", "val", "test"))
    assert torch.equal(test["image"], test0["image"])
    assert len(train["label"]) + len(val["label"]) == len(train0["label"]) == 160
    assert len(val["label"]) == 20  # round(0.1 x 16) = 2 scenes of each of the 10 classes
    assert _rows(train["image"]) | _rows(val["image"]) == _rows(train0["image"])
    assert not _rows(train["image"]) & _rows(val["image"])
    assert torch.bincount(val["label"], minlength=10).tolist() == [2] * 10
    with pytest.raises(ValueError, match="part 'val' needs multitask.val_fraction > 0"):
        full_data(spec0, "val")


def test_val_sums_are_read_apart_from_test_sums() -> None:
    tasks = build_tasks(settings_from_config(compose_config("multitask")).link)
    sums = {
        P.metric_key(0, "classification", "correct"): 3.0,
        P.metric_key(0, "classification", "count"): 4.0,
        P.metric_key(0, "depth", "sq_err_m2"): 4.0,
        P.metric_key(0, "depth", "pixels"): 1.0,
        P.VAL_PREFIX + P.metric_key(0, "classification", "correct"): 1.0,
        P.VAL_PREFIX + P.metric_key(0, "classification", "count"): 5.0,
        P.VAL_PREFIX + P.metric_key(0, "depth", "sq_err_m2"): 9.0,
        P.VAL_PREFIX + P.metric_key(0, "depth", "pixels"): 1.0,
    }
    test = P.metrics_from_sums(sums, tasks, [5.0])[5.0]
    val = P.metrics_from_sums(sums, tasks, [5.0], prefix=P.VAL_PREFIX)[5.0]
    assert test == pytest.approx({"classification": 0.75, "depth": 2.0})
    assert val == pytest.approx({"classification": 0.2, "depth": 3.0})


def test_reported_rows_are_the_last_round_whatever_the_test_metrics() -> None:
    """Selection never reads test metrics: the table rows are the last round's, even when an
    earlier round has a better test (or validation) score, and shuffling the test metrics
    across rounds does not change which rounds are reported."""
    history = [
        {"method": "gai", "ratio": 0.25, "snr_db": 14.0, "round": r, "acc": a, "val_acc": v}
        for r, a, v in ((1, 0.9, 0.8), (2, 0.5, 0.9), (3, 0.7, 0.1))
    ]
    (row,) = final_rows(history)
    assert row["round"] == 3 and row["acc"] == 0.7
    shuffled = [{**h, "acc": a} for h, a in zip(history, (0.1, 0.2, 0.05))]
    assert [r["round"] for r in final_rows(shuffled)] == [3]


# --- the seed aggregates' comparison helpers ---------------------------------------------------


def test_holm_adjusts_by_rank_and_keeps_order() -> None:
    from simulations.aggregate_slf_multitask import holm

    pairs = [{"t": {"p_value": p}} for p in (0.01, 0.04, 0.03)]
    holm(pairs)  # sorted: 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; max(0.06, 1 x 0.04) = 0.06
    assert [p["p_holm"] for p in pairs] == pytest.approx([0.03, 0.06, 0.06])
    assert [p["significant"] for p in pairs] == [True, False, False]


def test_compare_pairs_seeds_and_formats_the_interval() -> None:
    from simulations.aggregate import SeedRun
    from simulations.aggregate_slf_multitask import compare, pm, summarize_flat

    runs = [SeedRun(s, Path("."), Path(".")) for s in (0, 1, 2)]
    flat: list[dict[str, float | None]] = [
        {"a": 1.0, "b": 0.5},
        {"a": 2.0, "b": 1.0},
        {"a": 3.0, "b": None},
    ]
    metrics = summarize_flat(runs, flat)
    assert metrics["b"]["seeds"] == [0, 1] and metrics["b"]["missing_seeds"] == [2]
    # a: mean 2, std 1, t(0.975, 2) = 4.3027 -> half-width 4.3027 / sqrt(3) = 2.484
    assert pm(metrics, "a") == "2.000 ± 2.484"
    got = compare(metrics, "a", "b")
    assert got is not None and got["seeds"] == [0, 1]
    assert got["t"]["mean_diff"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2
    assert compare(metrics, "a", "zzz") is None
