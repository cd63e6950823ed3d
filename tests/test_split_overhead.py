"""benchmarks/split_overhead.py: the statistics of the repeats (medians, spread, ratios paired
within a repeat, the flat keys README/docs quote) and the per-exchange profile of the probes,
on hand-made runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from _messages import received  # tests/ is on sys.path
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchmarks import split_overhead as bench  # noqa: E402
from benchmarks._split_probes import TimedGrid, exchange_profile, summarize  # noqa: E402


def _prof(epoch: float, compute: float, ex: float = 11.0) -> dict[str, float]:
    over = epoch - compute - 1.0 - 0.5 - 0.1
    return {
        "exchanges": ex,
        "train_time_s": epoch,
        "client_load_s": 1.0,
        "client_compute_s": compute,
        "client_save_s": 0.5,
        "server_s": 0.1,
        "wait_s": epoch - 0.1,
        "messaging_overhead_s": over,
        "overhead_per_exchange_s": over / ex,
    }


def _runs() -> list[dict]:
    ref = [(70.0, 35.0), (60.0, 40.0), (80.0, 30.0)]  # epoch, critical path per repeat
    par = [42.0, 44.0, 40.0]
    sim = [(63.0, 50.0), (66.0, 55.0), (72.0, 60.0)]  # epoch, client compute
    runs = []
    for i in range(3):
        runs.append(
            {"kind": "reference", "steps": 1, "repeat": i, "epoch_s": ref[i][0],
             "critical_path_s": ref[i][1], "eval_s": 4.0, "test_accuracy": 0.1, "loss": 2.3}
        )  # fmt: skip
        runs.append(
            {"kind": "parallel", "steps": 1, "repeat": i, "epoch_s": par[i],
             "client_compute_s": par[i] - 1.0, "server_s": 0.1, "transport_s": 0.9, "loss": 2.3}
        )  # fmt: skip
        runs.append(
            {"kind": "sim", "steps": 1, "repeat": i, "epoch_s": sim[i][0], "eval_s": 4.0,
             "startup_s": 0.2, "discover_s": 20.0, "total_s": 90.0, "wall_s": 91.0,
             "test_accuracy": 0.1, "loss": 2.3, "profile": _prof(*sim[i]),
             "exchange_profile": None, "ledger": {"finetune": {"up": {"bytes": 10}}}}
        )  # fmt: skip
    return runs


def test_summarize_median_min_max() -> None:
    assert summarize([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert summarize([1.0, 4.0]) == {"median": 2.5, "min": 1.0, "max": 4.0, "n": 2}


def test_spread_recurses_and_skips_non_numbers() -> None:
    tree = bench.spread(
        [
            {"a": 1.0, "b": {"c": 2}, "s": "x", "t": True},
            {"a": 3.0, "b": {"c": 4}, "s": "y", "t": 1},
        ]
    )
    assert tree == {
        "a": {"median": 2.0, "min": 1.0, "max": 3.0, "n": 2},
        "b": {"c": {"median": 3.0, "min": 2.0, "max": 4.0, "n": 2}},
    }
    assert bench.medians({**tree, "l": [1, 2], "x": {"y": 5}}) == {"a": 2.0, "b": {"c": 3.0}}


def test_summarize_s_pairs_ratios_within_a_repeat() -> None:
    entry = bench.summarize_s(_runs())
    # per repeat: 63/35 = 1.8, 66/40 = 1.65, 72/30 = 2.4 → median 1.8 (not 66/35 of medians)
    r = entry["sim"]["ratio_vs_critical_path"]
    assert r["median"] == pytest.approx(1.8)
    assert (r["min"], r["max"]) == (pytest.approx(1.65), pytest.approx(2.4))
    assert entry["ratio_vs_critical_path"] == pytest.approx(1.8)
    # sim / reference epoch: 0.9, 1.1, 0.9 → 0.9; sim / parallel: 1.5, 1.5, 1.8 → 1.5
    assert entry["ratio"] == pytest.approx(0.9)
    assert entry["ratio_vs_parallel"] == pytest.approx(1.5)
    # parallel / critical path: 1.2, 1.1, 4/3 → 1.2
    assert entry["ratio_parallel_vs_critical_path"]["median"] == pytest.approx(1.2)
    assert entry["reference_epoch_s"] == 70.0 and entry["reference_critical_path_s"] == 35.0
    assert entry["sim_epoch_s"] == 66.0 and entry["parallel_epoch_s"] == 42.0
    # overhead per exchange: (63-51.6)/11, (66-56.6)/11, (72-61.6)/11 → median 10.4/11
    ov = entry["sim"]["profile"]["overhead_per_exchange_s"]
    assert ov["median"] == pytest.approx(10.4 / 11) and ov["n"] == 3
    assert entry["profile"]["overhead_per_exchange_s"] == pytest.approx(10.4 / 11)
    assert entry["sim"]["ledger"] == {"finetune": {"up": {"bytes": 10}}}
    json.dumps(entry)  # the report is JSON


def test_order_alternates() -> None:
    kinds = ["reference", "sim", "parallel"]
    assert bench._order(kinds, 0) == kinds and bench._order(kinds, 1) == kinds[::-1]


def _msg(mtype: str) -> Message:
    return received(RecordDict({"config": ConfigRecord({"x": 1})}), mtype)


class _FakeGrid:
    def __init__(self) -> None:
        self.n = 0

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for _ in messages:
            self.n += 1
            ids.append(f"m{self.n}")
        return ids

    def pull_messages(self, ids: list[str]) -> list[Message]:
        return []


def test_exchange_profile_from_stamps() -> None:
    grid = TimedGrid(_FakeGrid())
    grid.push_messages([_msg("train.split_step"), _msg("train.split_step")])
    grid.push_messages([_msg("train.split_step"), _msg("train.split_step")])
    pushes = [100.0, 110.0]
    grid.pushes = [(t, ids, types) for t, (_, ids, types) in zip(pushes, grid.pushes)]

    def reply(enter: float, leave: float, compute: float) -> Message:
        m = received(RecordDict(), "train.split_step")
        m.content["bench"] = MetricRecord(
            {"t_enter": enter, "t_exit": leave, "pid": 1, "torch_threads": 1,
             "torch_interop_threads": 1, "omp_num_threads": 1}
        )  # fmt: skip
        m.content["timing"] = MetricRecord({"load_s": 0.5, "compute_s": compute, "save_s": 0.25})
        return m

    # exchange 0: client A enters at +0.1, leaves at +4.1; client B +0.2 → +5.2; seen +5.3
    grid.seen = {
        "m1": (104.2, reply(100.1, 104.1, 3.0)),
        "m2": (105.3, reply(100.2, 105.2, 4.0)),
        "m3": (112.0, reply(110.05, 111.9, 1.0)),
        "m4": (112.0, reply(110.05, 111.85, 1.0)),
    }
    prof = exchange_profile(grid)
    e0, e1 = prof["exchanges"]
    assert e0["wait_s"] == pytest.approx(5.3) and e0["server_s"] == pytest.approx(110.0 - 105.3)
    assert e0["dispatch_s"] == pytest.approx(0.2) and e0["handler_s"] == pytest.approx(5.0)
    assert e0["flower_s"] == pytest.approx(5.3 - 5.0)
    assert e0["framing_s"] == pytest.approx(5.0 - 4.75)  # B: 5.0 − (0.5 + 4 + 0.25)
    assert e1["wait_s"] == pytest.approx(2.0) and e1["server_s"] == 0.0
    assert prof["sum"]["wait_s"] == pytest.approx(7.3)
    assert prof["client_processes"] == [
        {"pid": 1, "torch_threads": 1, "torch_interop_threads": 1, "OMP_NUM_THREADS": 1}
    ]
