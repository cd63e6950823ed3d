"""benchmarks/main_floor.py: the critical-path arithmetic on a fake clock, the summary
comparison, and a tiny paper-1 run through the timed grid that equals the plain in-process run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import _runs  # noqa: E402

from benchmarks import main_floor  # noqa: E402


class FakeClock:
    """A clock that only moves when a handler "computes"."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _grid(costs: dict[int, float], cores: int) -> tuple[main_floor.TimedGrid, FakeClock]:
    """A timed grid whose node of partition p takes costs[p] clock seconds per message."""
    clock = FakeClock()

    def handler(msg: Message, context: Context) -> Message:
        clock.now += costs[int(context.node_config["partition-id"])]
        return Message(RecordDict(), reply_to=msg)

    app = ClientApp()
    app.train()(handler)
    nodes = [{"partition-id": p, "num-partitions": len(costs)} for p in costs]
    return main_floor.TimedGrid(app, nodes, {}, cores=cores, clock=clock), clock


def _exchange(grid: main_floor.TimedGrid, per_node: int = 1) -> None:
    msgs = [
        grid.create_message(RecordDict(), "train", node, "g")
        for node in grid.get_node_ids()
        for _ in range(per_node)
    ]
    assert len(list(grid.pull_messages(grid.push_messages(msgs)))) == len(msgs)


def test_floor_is_server_time_plus_slowest_node_per_group() -> None:
    grid, clock = _grid({0: 2.0, 1: 0.5}, cores=2)
    grid.enter_stage("a")
    _exchange(grid)  # group: max(2.0, 2.5 / 2) = 2.0
    clock.now += 0.25  # server step
    _exchange(grid, per_node=2)  # node 0: 4.0, node 1: 1.0 -> 4.0
    grid.finish()
    a = grid.report()["a"]
    assert a["wall_s"] == 2.0 + 0.5 + 0.25 + 4.0 + 1.0
    assert a["client_s"] == 7.5
    assert a["server_s"] == 0.25
    assert a["floor_s"] == 0.25 + 2.0 + 4.0
    assert (a["groups"], a["messages"]) == (2, 6)


def test_more_nodes_than_cores_share_them() -> None:
    # three 1-second nodes on two cores: 1.5 s, not 1 s (the slowest node alone)
    grid, _ = _grid({0: 1.0, 1: 1.0, 2: 1.0}, cores=2)
    grid.enter_stage("a")
    _exchange(grid)
    grid.finish()
    assert grid.report()["a"]["floor_s"] == 1.5
    # one core: the sum
    grid, _ = _grid({0: 1.0, 1: 1.0, 2: 1.0}, cores=1)
    grid.enter_stage("a")
    _exchange(grid)
    grid.finish()
    assert grid.report()["a"]["floor_s"] == 3.0


def test_stages_split_the_run_and_total_adds_them() -> None:
    grid, clock = _grid({0: 1.0, 1: 3.0}, cores=2)
    clock.now += 0.5  # setup: server only
    grid.enter_stage("x/stage1")
    _exchange(grid)
    grid.enter_stage("x/stage2")
    _exchange(grid)
    _exchange(grid)
    grid.finish()
    rep = grid.report()
    assert list(rep) == ["setup", "x/stage1", "x/stage2", "total"]
    assert rep["setup"]["floor_s"] == 0.5 and rep["setup"]["messages"] == 0
    assert rep["x/stage1"]["floor_s"] == 3.0
    assert rep["x/stage2"]["floor_s"] == 6.0
    assert rep["total"]["floor_s"] == 9.5
    assert rep["total"]["wall_s"] == 0.5 + 4.0 + 8.0
    assert rep["total"]["groups"] == 3


def test_differences_skip_wall_fields_and_name_the_rest() -> None:
    a: dict[str, Any] = {
        "wall_time_s": 1,
        "methods": {"m": {"acc": 0.5, "stage1_time_s": 3, "r": [1, 2]}},
    }
    b: dict[str, Any] = {
        "wall_time_s": 9,
        "methods": {"m": {"acc": 0.5, "stage1_time_s": 4, "r": [1, 2]}},
    }
    assert main_floor.differences(a, b) == []
    assert main_floor.count_fields(b) == 3  # acc and the two list entries
    b["methods"]["m"]["acc"] = 0.25
    b["methods"]["m"]["r"] = [1, 3]
    b["extra"] = True
    assert main_floor.differences(a, b) == [
        "/extra (only in simulation)",
        "/methods/m/acc: 0.5 / 0.25",
        "/methods/m/r[1]: 2 / 3",
    ]
    b["methods"]["m"]["r"] = [1]
    assert "/methods/m/r (lengths 2 / 1)" in main_floor.differences(a, b)


def test_timed_run_equals_the_plain_in_process_run(tmp_path: Path) -> None:
    """The benchmark's run is the experiment itself: same summary as run_in_process, every
    stage of the four methods timed, the floor between the busiest node's time and the wall."""
    plain, _ = _runs.run_in_process("multimodal", _runs.PAPER1_TINY, tmp_path / "plain")
    report, timed = main_floor.run(
        "multimodal", _runs.PAPER1_TINY.split(), tmp_path / "timed", cores=2
    )
    assert main_floor.differences(timed, plain) == []
    assert main_floor.count_fields(plain) > 20
    methods = ("decur", "simclr", "barlow_twins", "none")
    assert [k for k in report if "/" in k] == [f"{m}/stage{i}" for m in methods for i in (1, 2)]
    tol = 2e-3  # the report rounds each figure to the millisecond
    for name, row in report.items():
        assert 0 <= row["client_s"] <= row["wall_s"] + tol, name
        assert row["floor_s"] <= row["wall_s"] + tol, name
        assert row["floor_s"] >= row["server_s"] + row["client_s"] / 2 - tol, name
    assert report["decur/stage1"]["messages"] > report["simclr/stage1"]["messages"] > 0
    json.dumps(report, allow_nan=False)  # strict JSON


def test_pair_check_times_each_modality_alone_and_beside_the_other() -> None:
    tiny = [
        "data.num_samples=60",
        "data.image_size=8",
        "model.num_symbols=4",
        "model.widths=[4,8]",
        "pretrain.batch_size=8",
        "pretrain.projector=[8,8]",
    ]
    pair = main_floor.pair_check(1, overrides=tiny)
    kinds = [r["kind"] for r in pair["runs"]]
    assert kinds == ["rgb", "depth", "both"]
    assert [sorted(r["pass_s"]) for r in pair["runs"]] == [["rgb"], ["depth"], ["depth", "rgb"]]
    both = pair["runs"][2]["pass_s"]
    ratios = [both[m] / pair["runs"][i]["pass_s"][m] for i, m in enumerate(("rgb", "depth"))]
    s = pair["slowdown_beside_other"]
    assert s["n"] == 2 and s["min"] == min(ratios) and s["max"] == max(ratios)
    assert all(t > 0 for r in pair["runs"] for t in r["pass_s"].values())
