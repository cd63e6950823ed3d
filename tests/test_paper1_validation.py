"""Paper 1's validation split (``data.val_fraction``) and selection on it (issue 18).

The split: seeded, stratified, disjoint from the labelled and test scenes, drawn from the
training scenes without Stage II labels (so Stage II trains on the same scenes), carved out of
the labelled ones only when too few are unlabelled; no other draw moves. The evaluation: the
validation pass leaves test metrics, training and device state bit-identical, and its metrics
are those of the same scenes evaluated as a test set. The selection: reads validation accuracy
only (poisoned test accuracies change no selection field).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from flwr_semcom.accounting import CommLedger
from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import compose_config
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.paper1.data import stage_ids
from flwr_semcom.paper1.rgbd import labelled_subset, load_labels, validation_split
from flwr_semcom.paper1.stage2 import SUPERVISED_CLIENT_TASK, supervised_server
from flwr_semcom.rules import ConfigError
from flwr_semcom.split import split_kwargs
from simulations.experiments._paper1_summary import select_round, summarize, table
from strategies.split_training import SplitTraining

TINY = (
    "data.num_samples=80 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=6 strategy.rounds=2 strategy.eval_batch_size=7 channel=ideal "
    "data.label_fraction=0.5"
)


def _labels(n_per_class: int = 20, classes: int = 4) -> torch.Tensor:
    return torch.arange(n_per_class * classes) % classes


# ---------------------------------------------------------------------------- the split
def test_split_is_stratified_disjoint_seeded_and_keeps_the_labelled_scenes() -> None:
    labels = _labels()  # 4 classes × 20
    train = torch.arange(80)
    labelled = labelled_subset(train, labels, 0.25, seed=3)  # 5 per class
    val, lab2 = validation_split(train, labelled, labels, 0.1, seed=3)
    assert lab2 is labelled  # Stage II's scenes untouched
    assert torch.bincount(labels[val]).tolist() == [2, 2, 2, 2]  # round(20 · 0.1)
    assert not set(val.tolist()) & set(labelled.tolist())
    assert torch.equal(val, torch.sort(val).values)
    again, _ = validation_split(train, labelled, labels, 0.1, seed=3)
    other, _ = validation_split(train, labelled, labels, 0.1, seed=4)
    assert torch.equal(val, again) and not torch.equal(val, other)
    # at least one scene per class even when the fraction rounds to 0
    tiny, _ = validation_split(train, labelled, labels, 0.01, seed=3)
    assert torch.bincount(labels[tiny]).tolist() == [1, 1, 1, 1]


def test_split_carves_the_labelled_scenes_when_too_few_are_unlabelled() -> None:
    labels = _labels()
    train = torch.arange(80)
    val, lab = validation_split(train, train.clone(), labels, 0.25, seed=0)  # all labelled
    assert torch.bincount(labels[val]).tolist() == [5, 5, 5, 5]
    assert torch.bincount(labels[lab]).tolist() == [15, 15, 15, 15]
    assert sorted(val.tolist() + lab.tolist()) == list(range(80))
    # 90 % labelled leaves 2 unlabelled per class < 5 wanted: carved out of the labelled ones
    labelled = labelled_subset(train, labels, 0.9, seed=0)
    val, lab = validation_split(train, labelled, labels, 0.25, seed=0)
    assert set(val.tolist()) <= set(labelled.tolist()) and lab.shape[0] == 72 - 20
    # a class with a single labelled scene keeps it: nothing left to validate on
    one = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ConfigError, match="data.val_fraction"):
        validation_split(one, one, labels, 0.5, seed=0)


def test_split_off_and_out_of_range() -> None:
    labels = _labels()
    train = torch.arange(80)
    val, lab = validation_split(train, train, labels, 0.0, seed=0)
    assert val.numel() == 0 and lab is train
    for bad in (-0.1, 0.51):
        with pytest.raises(ConfigError, match=r"data.val_fraction: .* expected \[0, 0.5\]"):
            validation_split(train, train, labels, bad, seed=0)


def test_main_job_split_leaves_every_other_draw_unchanged() -> None:
    """The main job (10 % labels): 240 validation scenes, 24 per class, none labelled; the
    training, labelled, test IDs and shards are those of ``data.val_fraction=0``."""
    on = stage_ids(compose_config("main", ""))
    off = stage_ids(compose_config("main", "data.val_fraction=0"))
    labels, _ = load_labels(compose_config("main", ""))
    for name in ("train", "labelled", "test"):
        assert torch.equal(getattr(on, name), getattr(off, name)), name
    assert all(torch.equal(a, b) for a, b in zip(on.shards, off.shards, strict=True))
    assert torch.bincount(labels[on.val]).tolist() == [24] * 10
    assert not set(on.val.tolist()) & (set(on.labelled.tolist()) | set(on.test.tolist()))
    assert set(on.val.tolist()) <= set(on.train.tolist()) and off.val.numel() == 0


# ---------------------------------------------------------------------------- evaluation
def _run(overrides: str, test_ids: torch.Tensor | None = None) -> tuple[SplitTraining, Any]:
    cfg = compose_config("split_supervised", overrides)
    torch.set_num_threads(int(cfg.num_threads))
    server = supervised_server(cfg)
    if test_ids is not None:
        server.test_ids = test_ids
    nodes = [{"partition-id": i, "num-partitions": 2} for i in range(2)]
    grid = InProcessGrid(
        client_app, nodes, {"experiment": "split_supervised", "overrides": overrides}
    )
    strategy = SplitTraining(
        server, client_task=SUPERVISED_CLIENT_TASK, ledger=CommLedger(), **split_kwargs(cfg)
    )
    strategy.start(grid)
    return strategy, strategy.fetch_client_states(grid)


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_validation_pass_changes_no_test_metric_training_or_device_state() -> None:
    with_val, states_val = _run(f"{TINY} data.val_fraction=0.25")
    without, states = _run(f"{TINY} data.val_fraction=0")
    assert with_val.server.val_ids.numel() > 0 and without.server.val_ids.numel() == 0
    # traffic columns count every stage, the validation pass's too (ledger stage "eval")
    skip = ("time", "_s", "bytes", "bits", "channel_uses")
    for a, b in zip(with_val.history, without.history, strict=True):
        shared = [k for k in b if not any(t in k for t in skip)]
        assert {k: a[k] for k in shared} == {k: b[k] for k in shared}
        assert 0.0 <= a["val_accuracy"] <= 1.0 and "val_accuracy" not in b
    for stage in ("finetune", "eval"):
        on, off = (s.ledger.total("bytes", stage=stage) for s in (with_val, without))
        assert (on > off) == (stage == "eval") and on >= off, stage
    assert _same_state(states_val, states)
    assert all(
        torch.equal(x, y)
        for x, y in zip(
            with_val.server.model.state_dict().values(),
            without.server.model.state_dict().values(),
            strict=True,
        )
    )
    # the validation metrics are those of the same scenes evaluated as the test set
    # (ideal channel: no noise stream to differ)
    as_test, _ = _run(f"{TINY} data.val_fraction=0", test_ids=with_val.server.val_ids)
    for a, b in zip(with_val.history, as_test.history, strict=True):
        assert (a["val_accuracy"], a["val_loss"]) == (b["test_accuracy"], b["test_loss"])


# ---------------------------------------------------------------------------- selection
def _rows(val: list[float], test: list[float], method: str = "decur") -> list[dict[str, Any]]:
    return [
        {
            "method": method,
            "stage": "finetune",
            "round": r + 1,
            "val_accuracy": v,
            "test_accuracy": t,
            "bits": 1000.0 * (r + 1),
        }
        for r, (v, t) in enumerate(zip(val, test, strict=True))
    ]


def test_select_round_is_the_earliest_validation_maximum() -> None:
    assert select_round(_rows([0.5, 0.7, 0.7, 0.6], [0.9, 0.1, 0.2, 0.3])) == (2, 0.7)
    assert select_round(_rows([math.nan, 0.2], [1.0, 0.0])) == (2, 0.2)
    assert select_round(_rows([math.nan, math.nan], [1.0, 0.0])) is None
    assert select_round([]) is None


def test_selection_never_reads_test_metrics() -> None:
    val = [0.30, 0.62, 0.81, 0.80, 0.81]
    test = [0.31, 0.60, 0.79, 0.84, 0.83]
    methods = {"decur": {"status": "ok"}, "supervised": {"status": "ok"}}
    rows = _rows(val, test) + _rows([0.2, 0.4, 0.5, 0.6, 0.7], test, "supervised")
    base = summarize(rows, methods, {}, None)["methods"]["decur"]
    assert base["val_selected_round"] == 3 and base["val_accuracy_at_selected"] == 0.81
    assert base["test_accuracy_at_val_selected"] == 0.79  # not the test maximum 0.84
    assert base["final_accuracy"] == 0.83 and base["best_accuracy"] == 0.84
    rng = random.Random(0)
    for _ in range(20):  # scrambled / poisoned test accuracies: same selection
        poisoned = [dict(r, test_accuracy=rng.choice([0.0, 1.0, rng.random()])) for r in rows]
        got = summarize(poisoned, methods, {}, None)["methods"]["decur"]
        assert (got["val_selected_round"], got["val_accuracy_at_selected"]) == (3, 0.81)
        assert got["test_accuracy_at_val_selected"] == poisoned[2]["test_accuracy"]
    # changing the validation accuracies moves the selection
    moved = _rows([0.30, 0.90, 0.81, 0.80, 0.81], test) + rows[5:]
    got = summarize(moved, methods, {}, None)["methods"]["decur"]
    assert (got["val_selected_round"], got["test_accuracy_at_val_selected"]) == (2, 0.60)
    # the log table shows the selected round and test accuracy there, never the test maximum
    lines = table(summarize(rows, methods, {}, None))
    decur_line = next(line for line in lines if line.startswith("decur"))
    assert decur_line.split()[1:4] == ["3", "0.7900", "0.8300"] and "0.8400" not in decur_line


def test_split_supervised_runner_reports_the_validation_selection(tmp_path: Path) -> None:
    from simulations.experiments.split_supervised import run

    overrides = f"{TINY} strategy.rounds=3 data.val_fraction=0.25 paths.output_dir={tmp_path}"
    cfg = compose_config("split_supervised", overrides)
    nodes = [{"partition-id": i, "num-partitions": 2} for i in range(2)]
    grid = InProcessGrid(
        client_app, nodes, {"experiment": "split_supervised", "overrides": overrides}
    )
    summary = run(grid, cfg, grid.server_context())
    (folder,) = (tmp_path / "split_supervised").iterdir()
    rows = json.loads((folder / "metrics.json").read_text())
    vals = [r["val_accuracy"] for r in rows]
    best = next(i for i, v in enumerate(vals) if v == max(vals))
    assert summary["val_selected_round"] == rows[best]["round"]
    assert summary["test_accuracy_at_val_selected"] == rows[best]["test_accuracy"]
