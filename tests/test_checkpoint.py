"""Checkpoint and resume of the split_supervised runner, in process (issue #9, part B).

A run interrupted in the middle of round 2 and resumed from its round-1 checkpoint (fresh
clients, a fresh grid: what a restart after ``kill -9`` gives) ends with metrics, ledger and
final server and client weights bitwise equal to an uninterrupted run with the same seed.
The real ``kill -9`` + ``semcom-run --resume`` version is in test_checkpoint_launch.py (slow).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from _runs import without_wall  # tests/ is on sys.path

from flwr_semcom.checkpoint import (
    CHECKPOINT_NAME,
    Checkpointer,
    CheckpointError,
    get_rng_state,
    set_rng_state,
)
from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import compose_config
from flwr_semcom.inprocess import InProcessGrid
from simulations.experiments.split_supervised import run
from strategies.split_training import SplitTraining

TINY = (
    "data.num_samples=40 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=8 strategy.rounds=3"
)


def run_inprocess(overrides: str, partitions: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    cfg = compose_config("split_supervised", overrides)
    nodes = [{"partition-id": i, "num-partitions": 2} for i in partitions]
    grid = InProcessGrid(
        client_app, nodes, {"experiment": "split_supervised", "overrides": overrides}
    )
    return run(grid, cfg, grid.server_context())


def metrics_without_time(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv", newline="") as fh:
        # without the time columns (WALL), the only ones two runs of a seed may differ in
        return without_wall(list(csv.DictReader(fh)))


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(folder / CHECKPOINT_NAME, weights_only=True)
    state = payload["state"]
    out = {f"server.{k}": v for k, v in state["server"]["model"].items()}
    for pid, records in state["clients"].items():
        for part, entry in records.items():
            if entry["kind"] == "arrays":
                out.update({f"client{pid}.{part}.{k}": v for k, v in entry["data"].items()})
    return out


def test_resume_after_a_crash_mid_round_equals_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the ledger no longer depends on the run config (no overrides string in the messages)
    base = f"{TINY} paths.output_dir={tmp_path}/a"
    run_inprocess(base)
    (ref_dir,) = (tmp_path / "a" / "split_supervised").iterdir()

    crashed = f"{TINY} paths.output_dir={tmp_path}/b-longer-path"
    original = SplitTraining.aggregate_train

    def crash(self: SplitTraining, server_round: int, replies: Any) -> Any:
        if server_round == 2 and self._pass is not None and self._pass.exchange == 2:
            raise RuntimeError("simulated crash in round 2")
        return original(self, server_round, replies)

    with monkeypatch.context() as m:
        m.setattr(SplitTraining, "aggregate_train", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_inprocess(crashed)
    (run_dir,) = (tmp_path / "b-longer-path" / "split_supervised").iterdir()
    assert [r["round"] for r in metrics_without_time(run_dir)] == ["1"]  # round 1 kept
    assert torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)["round"] == 1

    summary = run_inprocess(f"{crashed} reliability.resume={run_dir}")
    assert summary["rounds"] == 3
    assert metrics_without_time(run_dir) == metrics_without_time(ref_dir)
    assert (run_dir / "ledger.csv").read_bytes() == (ref_dir / "ledger.csv").read_bytes()
    ref, got = final_weights(ref_dir), final_weights(run_dir)
    assert ref.keys() == got.keys() and len(ref) > 10
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no temp files
    # resuming a finished run trains nothing and leaves its results as they are
    assert run_inprocess(f"{crashed} reliability.resume={run_dir}")["rounds"] == 3
    assert metrics_without_time(run_dir) == metrics_without_time(ref_dir)
    assert (run_dir / "ledger.csv").read_bytes() == (ref_dir / "ledger.csv").read_bytes()


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(tmp_path: Path) -> None:
    # run b's node IDs map to the partitions in the other order (IDs are random in Flower)
    for name, seed, order in (("a", 0, (0, 1)), ("b", 0, (1, 0)), ("c", 1, (0, 1))):
        overrides = f"{TINY} strategy.rounds=2 seed={seed} paths.output_dir={tmp_path}/{name}"
        run_inprocess(overrides, order)
    a, b, c = ((tmp_path / n / "split_supervised").iterdir().__next__() for n in "abc")
    assert metrics_without_time(a) == metrics_without_time(b)
    assert (a / "ledger.csv").read_bytes() == (b / "ledger.csv").read_bytes()
    wa, wb = final_weights(a), final_weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert metrics_without_time(a) != metrics_without_time(c)


def test_checkpoint_of_another_config_is_refused_in_one_line(tmp_path: Path) -> None:
    cfg = compose_config("split_supervised", TINY)
    Checkpointer(tmp_path, cfg, experiment="split_supervised", overrides=TINY).save(
        1, {"x": torch.ones(2)}
    )
    other = compose_config("split_supervised", f"{TINY} strategy.lr=0.01")
    with pytest.raises(CheckpointError) as err:
        Checkpointer(tmp_path, other, experiment="split_supervised", overrides="").load()
    assert "strategy.lr = 0.05 there, 0.01 here" in str(err.value)
    assert "\n" not in str(err.value)
    # the resume key itself may differ
    same = compose_config("split_supervised", f"{TINY} reliability.resume={tmp_path}")
    ckpt = Checkpointer(tmp_path, same, experiment="split_supervised", overrides="").load()
    assert (
        ckpt.round == 1 and ckpt.overrides == TINY and torch.equal(ckpt.state["x"], torch.ones(2))
    )


def test_unsafe_or_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    cfg = compose_config("split_supervised", TINY)
    ck = Checkpointer(tmp_path, cfg, experiment="split_supervised", overrides="")
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        ck.load()
    torch.save({"format": 1, "evil": Path("/")}, tmp_path / CHECKPOINT_NAME)  # not plain data
    with pytest.raises(CheckpointError, match="cannot load safely"):
        ck.load()


def test_resume_into_a_model_of_another_shape_is_refused(tmp_path: Path) -> None:
    overrides = f"{TINY} strategy.rounds=1 paths.output_dir={tmp_path}"
    run_inprocess(overrides)
    (run_dir,) = (tmp_path / "split_supervised").iterdir()
    path = run_dir / CHECKPOINT_NAME
    payload = torch.load(path, weights_only=True)
    model = payload["state"]["server"]["model"]
    key = next(iter(model))
    model[key] = torch.zeros(3, 3, 3)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=f"server model does not fit the model: .*{key}"):
        run_inprocess(f"{overrides} reliability.resume={run_dir}")


def test_rng_state_round_trips() -> None:
    import random

    import numpy as np

    state = get_rng_state()
    a = (torch.rand(3), random.random(), np.random.rand(2))
    set_rng_state(state)
    b = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and (a[2] == b[2]).all()
