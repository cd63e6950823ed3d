"""Worker mode: whether this process is a per-node worker (:mod:`flwr_semcom.runtime.worker`).

A worker is the one process that holds a node for a run, so handlers may keep that node's
state live in memory between messages (warm state, docs/split.md "Warm client state"); every
other process (a Ray actor, a deployment ``flwr-clientapp`` process) must keep it in
``context.state`` only. This module imports only the standard library and flwr.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message

__all__ = ["in_worker", "on_worker_call", "run_worker_hooks", "set_worker_mode"]

_worker_mode = False
_hooks: list[Callable[[Message, Context], None]] = []


def in_worker() -> bool:
    """True in a per-node worker process (set by the worker at start)."""
    return _worker_mode


def set_worker_mode(on: bool) -> None:
    """Mark this process as a per-node worker (``on``) or not."""
    global _worker_mode
    _worker_mode = bool(on)


def on_worker_call(hook: Callable[[Message, Context], None]) -> None:
    """Register ``hook(message, context)``, called by the worker before every message (e.g.
    to write live state into ``context.state`` before a handler that reads the records)."""
    if hook not in _hooks:
        _hooks.append(hook)


def run_worker_hooks(message: Message, context: Context) -> None:
    """Call the registered hooks (the worker does, before handing ``message`` to the app)."""
    for hook in _hooks:
        hook(message, context)
