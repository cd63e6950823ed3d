"""A faster message feeder for Flower's simulation engine (flwr 1.41).

Flower's simulation engine hands messages to its workers from one feeder thread
(``flwr/server/superlink/fleet/vce/vce_api.py``, ``add_messages_to_queue``): every 0.1 s it
takes at most one undelivered message per node from the LinkState. So a node receives at most
one message per 0.1 s, whatever the client and the server do — the simulation's per-message
floor (../shared/FLOWER_NOTES.md §4; docs/performance.md measures 0.11-0.13 s of the 0.23 s of
overhead per split exchange there). Split learning sends one message per exchange (the main
job: 1,144), so the tick alone costs ~2 min of the main job.

:func:`install_fast_feeder` replaces that function, in the simulation engine's process only,
with the same loop whose pause adapts (:func:`feeder_pause`): ``min_wait`` (5 ms) right after
a message was fed, growing to 1 % of the time since the last one, at most ``max_wait``
(Flower's 0.1 s) — a message is seen at most ~1 % of the idle time late, and an idle
simulation polls as rarely as Flower's own loop. Everything else is Flower's: the same
LinkState query (``limit=1`` per node per pass, in node order), the same queue, the same
stop event; which message a node gets next and what it computes do not change, only when.

Messages are also *signalled*: :func:`attach_signals` wraps the engine's LinkState instance so
that storing a message for a node (the server's push) or a reply (the engine's injector
thread) sets an event. The feeder waits on the first instead of sleeping its pause, so a
pushed message is fed at once (the pause only bounds how long it sleeps when nothing is
pushed); :func:`flwr_semcom.runtime.messaging.collect` waits on the second between its
pulls, so a reply is seen as soon as the engine stores it. The server and the engine share
that one in-memory LinkState in the ``flwr-simulation`` process; in a deployment the grid has
no such state and both loops keep their timed pauses.

It is a patch of a private Flower function, so it is guarded:

- it acts only where the engine module is already imported (the ``flwr-simulation`` process
  loads the ClientApp before it starts the feeder thread): importing a ClientApp in a
  deployment's ``flwr-clientapp`` process patches nothing and imports nothing;
- only for the flwr version it was read in (1.41.x) and a feeder with the expected signature;
  otherwise Flower's feeder stays and one warning line says why;
- ``SEMCOM_SIM_FEEDER=flower`` in the environment keeps Flower's 0.1 s feeder (the A/B switch
  of ``benchmarks/split_overhead.py``).

The bundled ClientApp (:mod:`flwr_semcom.client_app`) calls it at import; a user's own
ClientApp module calls it at module level the same way.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from logging import INFO, WARNING
from queue import Queue
from typing import Any

__all__ = [
    "ENV_VAR",
    "SIGNALS_ATTR",
    "VCE_MODULE",
    "StateSignals",
    "attach_signals",
    "feed_messages",
    "feeder_pause",
    "install_fast_feeder",
    "restore_flower_feeder",
]

#: The simulation engine module whose feeder is replaced.
VCE_MODULE = "flwr.server.superlink.fleet.vce.vce_api"
#: Environment switch: ``flower`` keeps Flower's own feeder.
ENV_VAR = "SEMCOM_SIM_FEEDER"
#: flwr versions whose feeder was read and matches :func:`feed_messages` (major.minor).
SUPPORTED = ("1.41",)
_EXPECTED_PARAMS = ["state", "queue", "nodes_mapping", "f_stop"]
#: Attribute of a signalled LinkState that holds its :class:`StateSignals`.
SIGNALS_ATTR = "_semcom_signals"


class StateSignals:
    """Events set after a LinkState stored a message for a node (``ins``) or a reply
    (``res``). A waiter clears the event *before* it looks at the state, then waits: a store
    that completes after the look sets the event again, so no message is missed."""

    def __init__(self) -> None:
        self.ins = threading.Event()
        self.res = threading.Event()


def attach_signals(state: Any) -> StateSignals | None:
    """Wrap ``state.store_message_ins`` / ``store_message_res`` (on this instance only) so
    that each sets its event of the returned :class:`StateSignals` once the store returned
    (also when it raised). Idempotent; ``None`` where the state lacks either method or
    refuses new attributes (then nothing is changed)."""
    existing = getattr(state, SIGNALS_ATTR, None)
    if isinstance(existing, StateSignals):
        return existing
    store_ins = getattr(state, "store_message_ins", None)
    store_res = getattr(state, "store_message_res", None)
    if not callable(store_ins) or not callable(store_res):
        return None
    signals = StateSignals()

    def store_message_ins(message: Any) -> Any:
        try:
            return store_ins(message)
        finally:
            signals.ins.set()

    def store_message_res(message: Any) -> Any:
        try:
            return store_res(message)
        finally:
            signals.res.set()

    try:
        setattr(state, SIGNALS_ATTR, signals)
    except (AttributeError, TypeError):
        return None
    state.store_message_ins = store_message_ins
    state.store_message_res = store_message_res
    return signals


def feeder_pause(idle: float, min_wait: float = 0.005, max_wait: float = 0.1) -> float:
    """Seconds to wait before the next pass, ``idle`` s after the last message was fed:
    ``min_wait``, growing to 1 % of ``idle``, at most ``max_wait``."""
    return min(max(min_wait, 0.01 * idle), max_wait)


def feed_messages(
    state: Any,
    queue: Queue[Any],
    nodes_mapping: Mapping[int, int],
    f_stop: threading.Event,
    *,
    min_wait: float = 0.005,
    max_wait: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    wake: threading.Event | None = None,
) -> None:
    """Flower's ``add_messages_to_queue`` with an adaptive pause (module docstring): each pass
    takes at most one undelivered message per node, in ``nodes_mapping`` order. With
    ``wake`` (:attr:`StateSignals.ins`) the pause ends as soon as a message is stored."""
    last_fed = clock()
    while not f_stop.is_set():
        if wake is not None:
            wake.clear()
        fed = False
        for node_id in nodes_mapping:
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
                fed = True
        now = clock()
        if fed:
            last_fed = now
        pause = feeder_pause(now - last_fed, min_wait, max_wait)
        if wake is None:
            f_stop.wait(pause)
        else:
            wake.wait(pause)


def _params(fn: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(fn).parameters)


def install_fast_feeder(
    min_wait: float = 0.005,
    max_wait: float = 0.1,
    *,
    modules: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    flwr_version: str | None = None,
) -> bool:
    """Replace the simulation engine's feeder with :func:`feed_messages` (module docstring).

    Returns ``True`` when the engine's feeder is (now or already) the fast one, ``False`` when
    nothing was patched: not in a simulation engine process, ``SEMCOM_SIM_FEEDER=flower``, or
    an unsupported flwr (one warning line). ``modules``, ``environ`` and ``flwr_version``
    default to ``sys.modules``, ``os.environ`` and the installed flwr (tests pass their own).
    """
    if not 0 < min_wait <= max_wait:
        raise ValueError(
            f"feeder waits must satisfy 0 < min_wait <= max_wait, got {min_wait}, {max_wait}"
        )
    modules = sys.modules if modules is None else modules
    environ = os.environ if environ is None else environ
    vce = modules.get(VCE_MODULE)
    if vce is None:
        return False
    from flwr.common.logger import log

    choice = environ.get(ENV_VAR, "fast")
    if choice == "flower":
        log(INFO, "%s=flower: Flower's 0.1 s simulation feeder kept", ENV_VAR)
        return False
    if choice != "fast":
        raise ValueError(f"{ENV_VAR} must be 'fast' or 'flower', got {choice!r}")
    current = getattr(vce, "add_messages_to_queue", None)
    if getattr(current, "_semcom_fast_feeder", False):
        return True
    if flwr_version is None:
        import flwr

        flwr_version = str(flwr.__version__)
    if ".".join(flwr_version.split(".")[:2]) not in SUPPORTED or current is None:
        log(
            WARNING,
            "flwr %s: simulation feeder not replaced (read for %s only)",
            flwr_version,
            ", ".join(SUPPORTED),
        )
        return False
    if _params(current) != _EXPECTED_PARAMS:
        log(WARNING, "flwr's simulation feeder has parameters %s: not replaced", _params(current))
        return False

    def add_messages_to_queue(
        state: Any, queue: Queue[Any], nodes_mapping: Mapping[int, int], f_stop: threading.Event
    ) -> None:
        signals = attach_signals(state)
        feed_messages(
            state,
            queue,
            nodes_mapping,
            f_stop,
            min_wait=min_wait,
            max_wait=max_wait,
            wake=None if signals is None else signals.ins,
        )

    add_messages_to_queue._semcom_fast_feeder = True  # type: ignore[attr-defined]
    add_messages_to_queue._semcom_flower_feeder = current  # type: ignore[attr-defined]
    setattr(vce, "add_messages_to_queue", add_messages_to_queue)  # noqa: B010
    log(
        INFO,
        "simulation feeder: signalled, adaptive %.0f-%.0f ms pause (flwr_semcom.runtime.simfeed)",
        1e3 * min_wait,
        1e3 * max_wait,
    )
    return True


def restore_flower_feeder(modules: Mapping[str, Any] | None = None) -> bool:
    """Put Flower's own feeder back (for an A/B comparison in one process); ``True`` when
    the fast one was installed and is now replaced."""
    vce = (sys.modules if modules is None else modules).get(VCE_MODULE)
    current = getattr(vce, "add_messages_to_queue", None)
    original = getattr(current, "_semcom_flower_feeder", None)
    if vce is None or original is None:
        return False
    setattr(vce, "add_messages_to_queue", original)  # noqa: B010
    return True
