"""InProcessGrid: per-node contexts, replies, error replies."""

from __future__ import annotations

from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from flwr_semcom.client_app import app as semcom_app
from flwr_semcom.inprocess import InProcessGrid


def _app() -> ClientApp:
    app = ClientApp()

    @app.query("count")
    def count(msg: Message, ctx: Context) -> Message:
        rec = ctx.state.get("c", ConfigRecord({"n": 0}))
        rec["n"] = int(rec["n"]) + 1
        ctx.state["c"] = rec
        reply = ConfigRecord({"n": rec["n"], "pid": ctx.node_config["partition-id"]})
        return Message(RecordDict({"r": reply}), reply_to=msg)

    @app.query("boom")
    def boom(msg: Message, ctx: Context) -> Message:
        raise RuntimeError("deliberate failure")

    return app


def test_state_is_per_node_and_persists() -> None:
    grid = InProcessGrid(_app(), [{"partition-id": 0}, {"partition-id": 1}])
    nodes = list(grid.get_node_ids())
    for expected in (1, 2, 3):
        replies = grid.send_and_receive([Message(RecordDict(), n, "query.count") for n in nodes])
        assert [r.content["r"]["n"] for r in replies] == [expected, expected]
        assert [r.content["r"]["pid"] for r in replies] == [0, 1]
        assert [r.metadata.src_node_id for r in replies] == nodes


def test_handler_exception_becomes_error_reply() -> None:
    grid = InProcessGrid(_app(), [{"partition-id": 0}])
    (reply,) = grid.send_and_receive([Message(RecordDict(), 1000, "query.boom")])
    assert reply.has_error() and "deliberate failure" in reply.error.reason


def test_node_info_action_through_the_project_client_app() -> None:
    grid = InProcessGrid(semcom_app, [{"partition-id": 0, "num-partitions": 1}])
    msg = Message(RecordDict({"config": ConfigRecord({"device": "cpu"})}), 1000, "query.node_info")
    (reply,) = grid.send_and_receive([msg])
    info = reply.content["info"]
    assert info["device"] == "cpu" and "partition-id=0" in str(info["node_config"])


def test_node_check_runner_reports_every_node(tmp_path: Path) -> None:
    from flwr_semcom.config import compose_config
    from simulations.experiments.node_check import run

    cfg = compose_config("node_check", f"experiment.wait=30 paths.output_dir={tmp_path}")
    grid = InProcessGrid(semcom_app, [{"partition-id": i, "num-partitions": 2} for i in range(2)])
    summary = run(grid, cfg, grid.server_context())
    assert (summary["nodes"], summary["answered"], summary["failed"]) == (2, 2, 0)
    (folder,) = (tmp_path / "node_check").iterdir()
    rows = (folder / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "partition-id=1" in rows[2]
