"""A Flower SuperNode with adaptive polls instead of its fixed 3 s and 0.5 s sleeps (flwr 1.41).

Flower 1.41's SuperNode loop (``flwr/supernode/start_client_internal.py``) pulls a message
from the SuperLink; when there is none it sleeps **3 s** (line 263), and after handing a
message to a ClientApp it checks for the reply every **0.5 s** (line 470; line 506 the same
for a reply's objects). Neither is configurable. In split learning message j + 1 exists only
after reply j has reached the server, so every exchange pays the 3 s sleep in full, plus
0.25 s of the reply poll on average: 3.3 of the 4.7 s a warm exchange took on loopback TLS
(docs/deployment.md, timeline of one warm exchange).

``python -m flwr_semcom.runtime.fastnode [flower-supernode arguments]`` runs Flower's own
``flower-supernode`` (same arguments, TLS, SuperNode authentication, processes) after
:func:`install_fast_polls` has changed only how long those two sleeps last, in this process:

- the idle sleep becomes :func:`idle_pause`: 0.1 s right after a message was pulled,
  growing with the time since (5 % of it), at most Flower's 3 s — a node in a split pass
  pulls again 0.1 s after its reply instead of 3 s, an idle node polls the SuperLink as
  rarely as Flower's (after a minute without messages);
- the reply poll becomes 20 ms (it reads the node's own in-memory state, no network).

Everything else of the loop (what is pulled, in which order, how replies are sent) is
Flower's. Guards: only flwr 1.41.x, and only when the loop's source still has the two sleeps
this replaces — otherwise Flower's loop runs unchanged with one warning line.
``SEMCOM_SUPERNODE_POLLS=flower`` (or ``deploy/supernode.sh --flower-polls``) keeps Flower's
sleeps. ``deploy/supernode.sh`` starts the SuperNode this way by default.

Imports only the standard library and flwr (an edge box's SuperNode needs no torch).
"""

from __future__ import annotations

import inspect
import os
import sys
import time
from collections.abc import Callable, Mapping
from logging import INFO, WARNING
from types import ModuleType
from typing import Any

__all__ = ["ENV_VAR", "LOOP_MODULE", "PolledClock", "idle_pause", "install_fast_polls", "main"]

#: Flower's SuperNode loop module whose sleeps are shortened.
LOOP_MODULE = "flwr.supernode.start_client_internal"
#: Environment switch: ``flower`` keeps Flower's 3 s / 0.5 s sleeps.
ENV_VAR = "SEMCOM_SUPERNODE_POLLS"
#: flwr versions whose loop was read (major.minor).
SUPPORTED = ("1.41",)
#: Flower's idle and reply-poll sleeps (seconds), as written in the loop.
FLOWER_IDLE_S = 3
FLOWER_REPLY_POLL_S = 0.5


def idle_pause(idle: float, min_pause: float = 0.1, max_pause: float = 3.0) -> float:
    """Seconds the SuperNode sleeps when the SuperLink had no message for it, ``idle`` s after
    it last pulled one: ``min_pause``, growing to 5 % of ``idle``, at most ``max_pause``."""
    return min(max(min_pause, 0.05 * idle), max_pause)


class PolledClock:
    """Stands in for the ``time`` module inside Flower's SuperNode loop: ``sleep(3)`` (idle)
    lasts :func:`idle_pause`, ``sleep(0.5)`` (reply poll) lasts ``reply_poll``; every other
    sleep and attribute is the real ``time`` module's."""

    def __init__(
        self,
        min_pause: float = 0.1,
        max_pause: float = 3.0,
        reply_poll: float = 0.02,
        real: Any = time,
    ) -> None:
        if not 0 < min_pause <= max_pause:
            raise ValueError(
                f"SuperNode polls need 0 < min_pause <= max_pause, got {min_pause}, {max_pause}"
            )
        if not 0 < reply_poll <= FLOWER_REPLY_POLL_S:
            raise ValueError(f"reply_poll must be in (0, 0.5] s, got {reply_poll}")
        self._real = real
        self.min_pause, self.max_pause, self.reply_poll = min_pause, max_pause, reply_poll
        self.last_message = real.monotonic()

    def message_pulled(self) -> None:
        """The loop pulled a message: polls start short again."""
        self.last_message = self._real.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds == FLOWER_IDLE_S:
            idle = self._real.monotonic() - self.last_message
            seconds = idle_pause(idle, self.min_pause, self.max_pause)
        elif seconds == FLOWER_REPLY_POLL_S:
            seconds = self.reply_poll
        self._real.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _supported(module: ModuleType, flwr_version: str) -> str | None:
    """Why the loop of ``module`` cannot be patched, or None."""
    if ".".join(flwr_version.split(".")[:2]) not in SUPPORTED:
        return f"flwr {flwr_version} (read for {', '.join(SUPPORTED)} only)"
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return "the SuperNode loop's source is not readable"
    if "time.sleep(3)" not in source or "time.sleep(0.5)" not in source:
        return "the SuperNode loop no longer has its 3 s / 0.5 s sleeps"
    if not callable(getattr(module, "_pull_and_store_message", None)):
        return "the SuperNode loop has no _pull_and_store_message"
    return None


def install_fast_polls(
    module: ModuleType | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    flwr_version: str | None = None,
    clock: PolledClock | None = None,
) -> PolledClock | None:
    """Shorten the SuperNode loop's sleeps (module docstring) in ``module`` (default: Flower's
    ``start_client_internal``, imported). Returns the installed clock, or None when Flower's
    sleeps stay (``SEMCOM_SUPERNODE_POLLS=flower``, or a guard failed: one warning line)."""
    from flwr.common.logger import log

    environ = os.environ if environ is None else environ
    choice = environ.get(ENV_VAR, "fast")
    if choice not in ("fast", "flower"):
        raise ValueError(f"{ENV_VAR} must be 'fast' or 'flower', got {choice!r}")
    if choice == "flower":
        log(INFO, "%s=flower: Flower's 3 s idle / 0.5 s reply polls kept", ENV_VAR)
        return None
    if module is None:
        import importlib

        module = importlib.import_module(LOOP_MODULE)
    installed = getattr(module, "time", None)
    if isinstance(installed, PolledClock):
        return installed
    if flwr_version is None:
        import flwr

        flwr_version = str(flwr.__version__)
    why = _supported(module, flwr_version)
    if why is not None:
        log(WARNING, "SuperNode polls not shortened: %s", why)
        return None
    clock = PolledClock() if clock is None else clock
    pull: Callable[..., Any] = module._pull_and_store_message

    def pull_and_store_message(*args: Any, **kwargs: Any) -> Any:
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            clock.message_pulled()
        return run_id

    setattr(module, "_pull_and_store_message", pull_and_store_message)  # noqa: B010
    setattr(module, "time", clock)  # noqa: B010
    log(
        INFO,
        "SuperNode polls: idle %.2f-%.0f s (adaptive), reply %.0f ms (runtime.fastnode)",
        clock.min_pause,
        clock.max_pause,
        1e3 * clock.reply_poll,
    )
    return clock


def main() -> None:
    """``flower-supernode`` with :func:`install_fast_polls` applied first; same arguments."""
    from flwr.supernode.cli import flower_supernode

    try:
        install_fast_polls()
    except ValueError as err:
        print(f"semcom-supernode: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
