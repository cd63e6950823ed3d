"""The adaptive simulation feeder (flwr_semcom/runtime/simfeed.py): its pause against hand
values, one message per node per pass in node order like Flower's loop, and the guards of
the patch (only in an engine process, only for the flwr it was read in, opt-out by env), and
the LinkState signals that wake the feeder when a message is stored."""

from __future__ import annotations

import inspect
import threading
import time
import types
from queue import Queue
from typing import Any

import pytest

from flwr_semcom.runtime import simfeed


def test_pause_hand_values() -> None:
    # min_wait right after a message, 1 % of the idle time, at most max_wait
    assert simfeed.feeder_pause(0.0) == 0.005
    assert simfeed.feeder_pause(0.3) == 0.005  # 1 % of 0.3 s is 3 ms < 5 ms
    assert simfeed.feeder_pause(2.0) == pytest.approx(0.02)
    assert simfeed.feeder_pause(9.0) == pytest.approx(0.09)
    assert simfeed.feeder_pause(60.0) == 0.1
    assert simfeed.feeder_pause(1.0, min_wait=0.001, max_wait=0.004) == 0.004


class _State:
    """A LinkState stand-in: undelivered messages per node, handed out ``limit`` at a time."""

    def __init__(self, pending: dict[int, list[str]], arrivals: dict[int, list[str]]) -> None:
        self.pending = pending
        self.arrivals = arrivals  # pass number → messages that arrive before that pass
        self.calls: list[int] = []

    def get_message_ins(self, node_id: int, limit: int) -> list[str]:
        self.calls.append(node_id)
        out, self.pending[node_id] = self.pending[node_id][:limit], self.pending[node_id][limit:]
        return out


class _Stop:
    """A stop event that records each pause and stops after ``passes`` passes."""

    def __init__(self, passes: int, clock: list[float], on_pass: Any = None) -> None:
        self.passes, self.clock, self.on_pass = passes, clock, on_pass
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return len(self.waits) >= self.passes

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        self.clock[0] += timeout
        if self.on_pass is not None:
            self.on_pass(len(self.waits))
        return False


def test_one_message_per_node_per_pass_in_node_order_with_adaptive_pauses() -> None:
    state = _State({7: ["a1", "a2"], 3: ["b1"]}, {})
    clock = [100.0]

    def arrive(done: int) -> None:
        if done == 4:  # a message arrives for node 3 while the feeder idles
            state.pending[3].append("b2")
            clock[0] += 10.0  # … 10 s later than the last one fed

    stop = _Stop(6, clock, arrive)
    queue: Queue[Any] = Queue()
    simfeed.feed_messages(state, queue, {7: 0, 3: 1}, stop, clock=lambda: clock[0])  # type: ignore[arg-type]
    fed = [queue.get_nowait() for _ in range(queue.qsize())]
    # pass 1: a1 (node 7), b1 (node 3); pass 2: a2; pass 5: b2 — Flower's order, limit 1
    assert fed == ["a1", "b1", "a2", "b2"]
    assert state.calls == [7, 3] * 6
    # pauses: 5 ms after each pass that fed; idle passes grow with the idle time
    assert stop.waits[0] == stop.waits[1] == 0.005
    assert stop.waits[2] == 0.005  # idle 5 ms: still the minimum
    assert stop.waits[3] == 0.005
    assert stop.waits[4] == 0.005  # pass 5 fed b2 (after 10 s of idle): back to the minimum
    assert stop.waits[5] == 0.005


def test_a_long_idle_feeder_polls_at_flowers_rate() -> None:
    state = _State({1: []}, {})
    clock = [0.0]

    def idle(done: int) -> None:
        clock[0] += 5.0  # 5 s pass between polls

    stop = _Stop(4, clock, idle)
    simfeed.feed_messages(state, Queue(), {1: 0}, stop, clock=lambda: clock[0])  # type: ignore[arg-type]
    # idle 0 → 5 ms; then ~5 s → 50 ms, ~10 s → 100 ms (cap); never above Flower's 0.1 s
    assert stop.waits[0] == 0.005
    assert stop.waits[1] == pytest.approx(0.01 * 5.005)
    assert stop.waits[2] == pytest.approx(0.1)
    assert stop.waits[3] == 0.1


def _flower_like_feeder(state: Any, queue: Any, nodes_mapping: Any, f_stop: Any) -> None:
    raise AssertionError("not called in these tests")


def _engine(feeder: Any = _flower_like_feeder) -> dict[str, Any]:
    return {simfeed.VCE_MODULE: types.SimpleNamespace(add_messages_to_queue=feeder)}


def test_install_replaces_the_feeder_once_and_restore_puts_flowers_back() -> None:
    modules = _engine()
    assert simfeed.install_fast_feeder(modules=modules, environ={}, flwr_version="1.41.0")
    fast = modules[simfeed.VCE_MODULE].add_messages_to_queue
    assert fast is not _flower_like_feeder
    assert list(inspect.signature(fast).parameters) == ["state", "queue", "nodes_mapping", "f_stop"]
    assert simfeed.install_fast_feeder(modules=modules, environ={}, flwr_version="1.41.0")
    assert modules[simfeed.VCE_MODULE].add_messages_to_queue is fast  # not wrapped twice
    assert simfeed.restore_flower_feeder(modules)
    assert modules[simfeed.VCE_MODULE].add_messages_to_queue is _flower_like_feeder
    assert not simfeed.restore_flower_feeder(modules)


@pytest.mark.parametrize(
    ("modules", "environ", "version"),
    [
        ({}, {}, "1.41.0"),  # not an engine process (a deployment ClientApp): nothing imported
        (_engine(), {simfeed.ENV_VAR: "flower"}, "1.41.0"),  # opted out
        (_engine(), {}, "1.42.0"),  # a flwr the feeder was not read in
        (_engine(lambda state, queue, f_stop: None), {}, "1.41.0"),  # another signature
    ],
)
def test_guards_leave_flowers_feeder_alone(
    modules: dict[str, Any], environ: dict[str, str], version: str
) -> None:
    before = dict(vars(modules[simfeed.VCE_MODULE])) if modules else None
    assert not simfeed.install_fast_feeder(modules=modules, environ=environ, flwr_version=version)
    if modules:
        assert dict(vars(modules[simfeed.VCE_MODULE])) == before


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="SEMCOM_SIM_FEEDER must be 'fast' or 'flower'"):
        simfeed.install_fast_feeder(modules=_engine(), environ={simfeed.ENV_VAR: "quick"})
    with pytest.raises(ValueError, match="min_wait <= max_wait"):
        simfeed.install_fast_feeder(0.2, 0.1, modules=_engine(), environ={})


def test_the_installed_flower_has_the_feeder_this_replaces() -> None:
    """If a flwr upgrade changes the engine's feeder, this fails before a run silently
    keeps the 0.1 s loop (install_fast_feeder would only warn)."""
    import flwr
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue
    original = getattr(original, "_semcom_flower_feeder", original)
    assert str(flwr.__version__).startswith(simfeed.SUPPORTED)
    assert list(inspect.signature(original).parameters) == [
        "state",
        "queue",
        "nodes_mapping",
        "f_stop",
    ]
    source = inspect.getsource(original)
    assert "get_message_ins(node_id=node_id, limit=1)" in source
    assert "f_stop.wait(0.1)" in source


def test_a_real_feeder_thread_feeds_a_late_message_and_stops_on_the_event() -> None:
    """A real thread and event: a message stored 0.2 s into an idle spell is fed, and setting
    the stop event ends the thread."""
    state = _State({1: []}, {})
    queue: Queue[Any] = Queue()
    stop = threading.Event()
    th = threading.Thread(target=simfeed.feed_messages, args=(state, queue, {1: 0}, stop))
    th.start()
    try:
        stop.wait(0.2)
        state.pending[1].append("m")
        assert queue.get(timeout=5.0) == "m"
    finally:
        stop.set()
        th.join(timeout=5.0)
    assert not th.is_alive()


class _StoringState:
    """A LinkState stand-in with the two store methods the signals wrap."""

    def __init__(self) -> None:
        self.ins: list[str] = []
        self.res: list[str] = []

    def store_message_ins(self, message: str) -> str:
        if message == "bad":
            raise ValueError("refused")
        self.ins.append(message)
        return f"id-{message}"

    def store_message_res(self, message: str) -> str:
        self.res.append(message)
        return f"id-{message}"

    def get_message_ins(self, node_id: int, limit: int) -> list[str]:
        out, self.ins[:] = self.ins[:limit], self.ins[limit:]
        return out


def test_signals_are_set_after_each_store_also_when_it_raises_and_attach_is_idempotent() -> None:
    state = _StoringState()
    signals = simfeed.attach_signals(state)
    assert signals is not None
    assert not signals.ins.is_set() and not signals.res.is_set()
    assert state.store_message_ins("a") == "id-a"  # the store's own return value
    assert signals.ins.is_set() and not signals.res.is_set()
    assert state.ins == ["a"]
    signals.ins.clear()
    with pytest.raises(ValueError, match="refused"):
        state.store_message_ins("bad")
    assert signals.ins.is_set()  # a waiter looks again either way
    assert state.store_message_res("r") == "id-r" and signals.res.is_set()
    assert simfeed.attach_signals(state) is signals  # not wrapped twice
    signals.ins.clear()
    state.store_message_ins("b")
    assert state.ins == ["a", "b"] and signals.ins.is_set()


def test_signals_leave_a_state_without_stores_or_attributes_alone() -> None:
    assert simfeed.attach_signals(types.SimpleNamespace(store_message_ins=print)) is None

    class Slotted:
        __slots__ = ()

        def store_message_ins(self, message: str) -> None: ...

        def store_message_res(self, message: str) -> None: ...

    slotted = Slotted()
    assert simfeed.attach_signals(slotted) is None
    assert slotted.store_message_ins.__func__ is Slotted.store_message_ins  # type: ignore[attr-defined]


def test_flowers_in_memory_linkstate_can_be_signalled() -> None:
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    # the engine's state: an ordinary instance whose two store methods take one message
    for name in ("store_message_ins", "store_message_res"):
        assert list(inspect.signature(getattr(InMemoryLinkState, name)).parameters) == [
            "self",
            "message",
        ]
    assert "__slots__" not in vars(InMemoryLinkState)


def test_a_signalled_feeder_feeds_a_pushed_message_without_waiting_its_pause() -> None:
    state = _StoringState()
    signals = simfeed.attach_signals(state)
    assert signals is not None
    queue: Queue[Any] = Queue()
    stop = threading.Event()
    # both pauses 60 s: without the signal a pushed message would wait a minute
    feeder = threading.Thread(
        target=simfeed.feed_messages,
        args=(state, queue, {1: 0}, stop),
        kwargs={"min_wait": 60.0, "max_wait": 60.0, "wake": signals.ins},
        daemon=True,
    )
    feeder.start()
    time.sleep(0.2)  # the feeder found nothing and waits
    start = time.monotonic()
    state.store_message_ins("m1")  # the server's push, from another thread
    assert queue.get(timeout=30.0) == "m1"
    state.store_message_ins("m2")
    assert queue.get(timeout=30.0) == "m2"
    assert time.monotonic() - start < 30.0  # far below one 60 s pause
    stop.set()
    signals.ins.set()
    feeder.join(timeout=30.0)
    assert not feeder.is_alive()
