"""The messaging layer (flwr_semcom/runtime/messaging.py) with a hand-made ClientApp on the
in-process grid: ledger rows (kinds, order, sizes), failure policies, re-sends; and the one
byte counter (flwr_semcom.accounting.record_nbytes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flwr_semcom.accounting import CommLedger, payload_bytes, record_nbytes
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.reliability import FailurePolicy
from flwr_semcom.runtime.messaging import (
    ClientError,
    ClientFailureError,
    ClientInfo,
    Messenger,
    record_transfer,
    send,
)

ECHO = "train.echo"


def _app(fail_first: int | None = None) -> ClientApp:
    """Echo ``"data"`` back as ``"uplink"`` (+ a metric); node ``fail_first`` raises on
    attempt 0 only."""
    app = ClientApp()

    @app.train("echo")
    def echo(msg: Message, context: Context) -> Message:
        attempt = int(msg.content.config_records["config"].get("attempt", 0))  # type: ignore[arg-type]
        if context.node_id == fail_first and attempt == 0:
            raise RuntimeError("deliberate first-attempt failure")
        rec = msg.content.array_records["data"]
        return Message(
            RecordDict({"uplink": rec, "timing": MetricRecord({"load_s": 0.5})}), reply_to=msg
        )

    return app


def _grid(app: ClientApp) -> tuple[InProcessGrid, list[ClientInfo]]:
    grid = InProcessGrid(app, [{"partition-id": i} for i in range(2)])
    clients = [ClientInfo(1000 + i, i, role) for i, role in enumerate(("rgb", "depth"))]
    return grid, clients


def _msgs(clients: list[ClientInfo], n: int = 3) -> list[Message]:
    return [
        Message(
            RecordDict(
                {
                    "config": ConfigRecord({"task": "t", "round": 1}),
                    "data": ArrayRecord({"x": torch.zeros(n, 2)}),
                }
            ),
            c.node_id,
            ECHO,
        )
        for c in clients
    ]


def test_record_nbytes_is_payload_bytes_for_arrays_and_counts_config_values() -> None:
    t = {"a": torch.zeros(3, 4), "b": torch.zeros(5, dtype=torch.int64)}
    assert record_nbytes(ArrayRecord(t)) == payload_bytes(t) == 3 * 4 * 4 + 5 * 8
    # 8 per int/float, 1 per bool, UTF-8 length of a string (é = 2 bytes), lists summed
    rec = ConfigRecord({"i": 3, "f": 0.5, "b": True, "s": "é!", "l": [1, 2]})
    assert record_nbytes(rec) == 8 + 8 + 1 + 3 + 16
    assert record_nbytes(MetricRecord({"m": 1.0})) == 8
    with pytest.raises(TypeError, match="expected a Flower record"):
        record_nbytes(np.zeros(3))  # type: ignore[arg-type]


def test_send_records_down_rows_first_then_up_rows_in_client_order() -> None:
    grid, clients = _grid(_app())
    ledger = CommLedger()
    replies = send(
        grid,
        _msgs(clients),
        clients,
        action=ECHO,
        ledger=ledger,
        stage="finetune",
        round_=4,
        kinds={"data": "features", "uplink": "features"},
    )
    assert len(replies) == 2
    rows = [(r.direction, r.kind, r.bytes, r.client, r.round) for r in ledger.rows]
    cfg = len("t") + 8  # task + round
    assert rows == [
        ("down", "features", 24, "0:rgb", 4),
        ("down", "control", cfg, "0:rgb", 4),
        ("down", "features", 24, "1:depth", 4),
        ("down", "control", cfg, "1:depth", 4),
        ("up", "features", 24, "0:rgb", 4),
        ("up", "control", 8, "0:rgb", 4),  # the timing metric
        ("up", "features", 24, "1:depth", 4),
        ("up", "control", 8, "1:depth", 4),
    ]


def test_record_transfer_adds_channel_uses_to_the_kind_of_its_record() -> None:
    ledger = CommLedger()
    content = RecordDict(
        {"config": ConfigRecord({"a": 1}), "uplink": ArrayRecord({"z": torch.zeros(2, 6)})}
    )
    record_transfer(
        ledger,
        "up",
        content,
        stage="eval",
        round_=2,
        client="0:rgb",
        kinds={"uplink": "features"},
        uses={"uplink": 6},
    )
    assert [(r.kind, r.bytes, r.channel_uses) for r in ledger.rows] == [
        ("features", 48, 6),
        ("control", 8, 0),
    ]


def test_send_raises_naming_the_failed_client() -> None:
    grid, clients = _grid(_app(fail_first=1001))
    with pytest.raises(ClientError, match=r"node 1001 \(partition 1, depth\) failed in train.echo"):
        send(grid, _msgs(clients), clients, action=ECHO)


def test_wait_resends_with_the_attempt_and_counts_the_resend() -> None:
    grid, clients = _grid(_app(fail_first=1001))
    ledger = CommLedger()
    messenger = Messenger(ledger, policy=FailurePolicy("wait", retries=1), kinds={"data": "x"})
    replies, skipped = messenger.deliver(
        grid, list(zip(clients, _msgs(clients))), stage="finetune", round_=1, where="exchange 0"
    )
    assert all(r is not None for r in replies) and skipped == {}
    down = [(r.client, r.kind, r.bytes) for r in ledger.rows if r.direction == "down"]
    cfg = len("t") + 8
    # first sends, then the re-send to node 1001 with "attempt" (one more int) in its config
    assert down == [
        ("0:rgb", "x", 24),
        ("0:rgb", "control", cfg),
        ("1:depth", "x", 24),
        ("1:depth", "control", cfg),
        ("1:depth", "x", 24),
        ("1:depth", "control", cfg + 8),
    ]


def test_skip_reports_the_client_and_abort_raises() -> None:
    grid, clients = _grid(_app(fail_first=1000))
    messenger = Messenger(CommLedger(), policy=FailurePolicy("skip"))
    replies, skipped = messenger.deliver(
        grid, list(zip(clients, _msgs(clients))), stage="finetune", round_=3, where="exchange 1"
    )
    assert replies[0] is None and replies[1] is not None
    assert list(skipped) == [0] and "deliberate first-attempt failure" in skipped[0]
    grid, clients = _grid(_app(fail_first=1000))
    abort = Messenger(CommLedger(), policy=FailurePolicy("abort"))
    with pytest.raises(ClientFailureError, match=r"round 3, exchange 1.*on_failure=abort"):
        abort.deliver(
            grid, list(zip(clients, _msgs(clients))), stage="finetune", round_=3, where="exchange 1"
        )


def test_failure_policy_is_typed_and_validated() -> None:
    assert FailurePolicy() == FailurePolicy("abort", 0, 1)
    with pytest.raises(ValueError, match="on_failure: 'retry' unknown; valid: abort, skip, wait"):
        FailurePolicy("retry")
    with pytest.raises(ValueError, match="retries: -1 invalid"):
        FailurePolicy("wait", retries=-1)
    cfg = {"reliability": {"on_failure": "wait", "retries": 3, "checkpoint_every": 0}}
    assert FailurePolicy.from_config(cfg) == FailurePolicy("wait", 3, 0)
    assert FailurePolicy.from_config({}) == FailurePolicy()
