"""The server's pull loop (flwr_semcom/runtime/messaging.py ``collect``): pauses of
``poll_interval`` growing to 1 % of the time waited (at most 50 ms), on a fake clock."""

from __future__ import annotations

import math

import pytest
from _clock import FakeClock as _Clock  # tests/ is on sys.path
from _messages import received
from flwr.app import ConfigRecord, Message, RecordDict

from flwr_semcom.runtime import messaging
from flwr_semcom.runtime.messaging import ClientInfo, collect


class _Grid:
    """Replies to message ``m<i>`` once the clock passes ``ready[i]``; counts pulls."""

    def __init__(self, clock: _Clock, ready: list[float]) -> None:
        self.clock, self.ready, self.pulls = clock, ready, 0
        self.pulled_at: dict[str, float] = {}

    def push_messages(self, messages: list[Message]) -> list[str]:
        self.t0 = self.clock.now
        return [f"m{i}" for i in range(len(messages))]

    def pull_messages(self, ids: list[str]) -> list[Message]:
        self.pulls += 1
        out = []
        for mid in ids:
            if self.clock.now - self.t0 >= self.ready[int(mid[1:])]:
                self.pulled_at[mid] = self.clock.now - self.t0
                out.append(received(RecordDict(), "train.x", reply_to=mid))
        return out


def _run(
    monkeypatch: pytest.MonkeyPatch, ready: list[float], poll: float, timeout: float = 600.0
) -> tuple[_Grid, _Clock, list]:
    clock = _Clock()
    monkeypatch.setattr(messaging, "time", clock)
    grid = _Grid(clock, ready)
    clients = [ClientInfo(10 + i, i, "r") for i in range(len(ready))]
    msgs = [received(RecordDict({"config": ConfigRecord({})}), "train.x") for _ in ready]
    replies, failures = collect(
        grid,  # type: ignore[arg-type]
        msgs,
        clients,
        action="train.x",
        poll_interval=poll,
        timeout=timeout,
    )
    assert all(r is not None for r in replies) or failures
    return grid, clock, failures


def test_pause_grows_to_one_percent_of_the_wait_capped() -> None:
    pause = messaging._pull_pause
    assert pause(0.005, 0.0) == 0.005
    assert pause(0.005, 0.2) == 0.005  # 1 % of 0.2 s is below the floor
    assert pause(0.005, 2.0) == pytest.approx(0.02)
    assert pause(0.005, 60.0) == 0.05  # capped
    assert pause(3.0, 60.0) == 3.0  # a slow poll interval is kept as is


def test_short_exchange_polls_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    grid, clock, _ = _run(monkeypatch, [0.1, 0.1], poll=0.005)
    assert set(clock.sleeps) == {0.005}  # below 0.5 s waited the pause is poll_interval
    assert grid.pulled_at["m0"] == pytest.approx(0.1, abs=0.0051)


def test_long_exchange_pulls_less_and_is_seen_at_most_one_percent_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grid, clock, _ = _run(monkeypatch, [4.0, 3.0], poll=0.005)
    # 0.5 s at 5 ms (100 pulls) + 100·ln(4 / 0.5) pulls ≈ 308, not 800 as with a fixed 5 ms
    expected = 100 + 100 * math.log(4.0 / 0.5)
    assert abs(grid.pulls - expected) < 10
    assert 4.0 <= grid.pulled_at["m0"] <= 4.0 * 1.01 + 1e-9
    assert max(clock.sleeps) <= 0.04 + 1e-9


def test_timeout_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    _, clock, failures = _run(monkeypatch, [1e9, 0.1], poll=0.005, timeout=10.0)
    assert [(f.index, f.kind) for f in failures] == [(0, "timeout")]
    assert 10.0 < clock.now - 1000.0 <= 10.0 + 0.05 + 1e-6


def test_a_signalled_state_wakes_the_pull_loop_when_a_reply_is_stored() -> None:
    import threading
    import time

    from flwr_semcom.runtime import simfeed

    class State:
        def __init__(self) -> None:
            self.replies: dict[str, Message] = {}

        def store_message_ins(self, message: Message) -> None: ...

        def store_message_res(self, message: Message) -> None:
            self.replies[message.metadata.reply_to_message_id] = message

    class Grid:
        def __init__(self) -> None:
            self.state = State()
            self.pulls = 0

        def push_messages(self, messages: list[Message]) -> list[str]:
            return ["m0"]

        def pull_messages(self, ids: list[str]) -> list[Message]:
            self.pulls += 1
            return [self.state.replies.pop(m) for m in ids if m in self.state.replies]

    grid = Grid()
    assert simfeed.attach_signals(grid.state) is not None
    reply = received(RecordDict(), "train.x", reply_to="m0")
    engine = threading.Timer(0.3, grid.state.store_message_res, args=(reply,))
    engine.start()
    start = time.monotonic()
    replies, failures = collect(
        grid,  # type: ignore[arg-type]
        [received(RecordDict({"config": ConfigRecord({})}), "train.x")],
        [ClientInfo(10, 0, "r")],
        action="train.x",
        poll_interval=60.0,  # an unsignalled loop would sleep a minute before its second pull
        timeout=600.0,
    )
    engine.join()
    assert replies == [reply] and failures == []
    assert grid.pulls == 2  # the first finds nothing; the store wakes the second
    assert time.monotonic() - start < 30.0
