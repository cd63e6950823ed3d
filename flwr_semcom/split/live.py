"""Where a node's split state lives between ``train.split_step`` messages: cold or warm.

**Cold** (every process that may not see the node's next message: a Ray actor, a deployment
``flwr-clientapp`` process): weights, optimizer and pending plan are loaded from
``context.state`` for every message and written back after it (:mod:`.state`).

**Warm** (a per-node worker, :mod:`flwr_semcom.runtime.worker`, the one process holding the
node for the run): the built task (its model holds the weights), the optimizer object and the
pending plan and buffers stay in this process, in a *live entry* per (run, node, task), with a
random *stamp*. ``context.state`` then holds only the task's ``meta`` record: ``round``,
``exchange``, ``stamp`` (the live entry's) and ``saved`` (the stamp at which the full records
in ``context.state`` were written, ``""`` if they are not there). A message uses the live entry
only when its stamp equals the stamp in ``context.state`` (same run, node and task); otherwise
it loads ``context.state`` (the *cold path*), which must then be complete (``saved == stamp``)
or the message fails with one line (the state was lost: the worker restarted mid-round).

Full records are written at *persist points*: the end of a pass (a message without a plan),
a message whose config asks for it (``persist``), before a handler reads the records
(``query.split_checkpoint``, a handler of another action: :func:`flush_node`), and always in
cold mode. Any write of the records outside a step gives the meta a new stamp
(:func:`~flwr_semcom.split.state.restamp`), so a live entry can never outlive them.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from logging import WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.logger import log

from flwr_semcom.runtime.relay import in_worker, on_worker_call
from flwr_semcom.split.protocol import MESSAGE_TYPES
from flwr_semcom.split.state import (
    load_module,
    load_optimizer,
    module_record,
    optimizer_records,
    state_key,
)

__all__ = [
    "Live",
    "current",
    "discard",
    "enabled",
    "ensure_model",
    "flush",
    "flush_node",
    "open_step",
    "save_step",
    "warm",
]

#: The records written at a persist point (``meta`` is always written).
FULL_PARTS = ("model", "optim", "optim_meta", "pending", "pending_buffers")
_MAX_ENTRIES = 16


@dataclass
class Live:
    """A node's live split state in a worker (see the module docstring)."""

    built: Any  # the cached built task whose ``task.model`` holds the live weights
    optimizer: torch.optim.Optimizer
    pending: ArrayRecord | None
    buffers: ArrayRecord | None
    round: int
    exchange: int
    stamp: str


_entries: OrderedDict[tuple[int, int, str], Live] = OrderedDict()
_force: bool | None = None


def enabled() -> bool:
    """Whether split handlers keep state warm here (a per-node worker; tests: :func:`warm`)."""
    return in_worker() if _force is None else _force


@contextmanager
def warm(on: bool = True) -> Iterator[None]:
    """Force warm (``on``) or cold mode in this process for the block (tests)."""
    global _force
    before = _force
    _force = on
    try:
        yield
    finally:
        _force = before
        _entries.clear()


def _key(context: Context, task: str) -> tuple[int, int, str]:
    return (int(context.run_id), int(context.node_id), task)


def _meta(state: RecordDict, task: str) -> ConfigRecord | None:
    key = state_key(task, "meta")
    return state.config_records[key] if key in state else None


def current(context: Context, task: str) -> Live | None:
    """The live entry of ``task`` on this node if its stamp is the one in ``context.state``;
    a stale entry (another stamp) is dropped."""
    if not enabled():
        return None
    key = _key(context, task)
    entry = _entries.get(key)
    if entry is None:
        return None
    meta = _meta(context.state, task)
    if meta is not None and str(meta.get("stamp", "")) == entry.stamp:
        _entries.move_to_end(key)
        return entry
    del _entries[key]
    return None


def discard(context: Context, task: str) -> None:
    """Forget the live entry of ``task`` on this node (its objects may be half-updated)."""
    _entries.pop(_key(context, task), None)


def _write_full(state: RecordDict, task: str, entry: Live) -> None:
    model = entry.built.task.model
    for part, record in (("pending_buffers", entry.buffers), ("pending", entry.pending)):
        if record is not None:
            state[state_key(task, part)] = record
        elif state_key(task, part) in state:
            del state[state_key(task, part)]
    state[state_key(task, "model")] = module_record(model)
    arrays, opt_meta = optimizer_records(entry.optimizer)
    state[state_key(task, "optim")] = arrays
    state[state_key(task, "optim_meta")] = opt_meta


def flush(context: Context, task: str) -> None:
    """Write the valid live entry of ``task`` (if any) into ``context.state`` (a persist
    point); the entry stays valid."""
    entry = current(context, task)
    if entry is None:
        return
    _write_full(context.state, task, entry)
    meta = _meta(context.state, task)
    if meta is not None:
        meta["saved"] = entry.stamp


def flush_node(message: Message, context: Context) -> None:
    """Worker hook: before a message of another action (which may read or rewrite the
    ``split.*`` records), write every live entry of this node into ``context.state`` and
    forget them (the next ``train.split_step`` reloads)."""
    if message.metadata.message_type in MESSAGE_TYPES:
        return
    node = (int(context.run_id), int(context.node_id))
    for key in [k for k in _entries if k[:2] == node]:
        flush(context, key[2])
        _entries.pop(key, None)


on_worker_call(flush_node)


def _check_complete(context: Context, task: str) -> None:
    meta = _meta(context.state, task)
    if meta is None or not str(meta.get("stamp", "")):
        return
    if str(meta.get("saved", "")) != str(meta["stamp"]):
        partition = context.node_config.get("partition-id", "?")
        raise RuntimeError(
            f"split task {task!r} on node {context.node_id} (partition {partition}): warm "
            f"state for exchange {meta.get('exchange')!s} of round {meta.get('round')!s} was lost "
            "(the node's worker restarted mid-round); restart the run with --resume"
        )


def _load_model(built: Any, state: RecordDict, task: str) -> None:
    key = state_key(task, "model")
    if key in state:
        load_module(built.task.model, state.array_records[key])
    else:
        built.task.model.load_state_dict(built.init_state)


def _cold(built: Any, context: Context, task: str) -> None:
    """Make ``context.state`` authoritative (flush a live entry of another built task of
    this node, or refuse lost state) and load its weights into ``built``."""
    entry = current(context, task)
    if entry is not None:
        flush(context, task)
        discard(context, task)
    _check_complete(context, task)
    _load_model(built, context.state, task)


def ensure_model(built: Any, context: Context, task: str) -> None:
    """Make ``built.task.model`` hold this node's current weights of ``task`` (the live ones
    when valid, else those of ``context.state``)."""
    entry = current(context, task)
    if entry is None or entry.built is not built:
        _cold(built, context, task)


def open_step(
    built: Any, context: Context, task: str
) -> tuple[torch.optim.Optimizer, ArrayRecord | None, ArrayRecord | None]:
    """Weights into ``built``; the optimizer, the pending plan and its buffers."""
    entry = current(context, task)
    if entry is not None and entry.built is built:
        return entry.optimizer, entry.pending, entry.buffers
    _cold(built, context, task)
    state = context.state
    opt = built.task.make_optimizer(built.task.model.parameters())
    if state_key(task, "optim") in state:
        load_optimizer(
            opt,
            state.array_records[state_key(task, "optim")],
            state.config_records[state_key(task, "optim_meta")],
        )
    parts = [state_key(task, p) for p in ("pending", "pending_buffers")]
    pending, buffers = (state.array_records[k] if k in state else None for k in parts)
    return opt, pending, buffers


def save_step(
    built: Any,
    context: Context,
    task: str,
    position: tuple[int, int],
    opt: torch.optim.Optimizer,
    pending: tuple[ArrayRecord | None, ArrayRecord | None],
    *,
    persist: bool,
) -> None:
    """Store the state after a step at ``position`` (round, exchange): cold, all records;
    warm, a new live entry and stamp, the full records only when ``persist``."""
    state = context.state
    round_, exchange = position
    meta: dict[str, int | str] = {"round": round_, "exchange": exchange}
    entry = Live(built, opt, pending[0], pending[1], round_, exchange, uuid.uuid4().hex)
    if not enabled():
        _write_full(state, task, entry)
        state[state_key(task, "meta")] = ConfigRecord(meta)  # type: ignore[arg-type]
        return
    key = _key(context, task)
    _entries[key] = entry
    _entries.move_to_end(key)
    while len(_entries) > _MAX_ENTRIES:
        (run_id, node_id, old), _ = _entries.popitem(last=False)
        log(WARNING, "warm state: forgot task %r of node %d (run %d)", old, node_id, run_id)
    if persist:
        _write_full(state, task, entry)
    else:
        for part in FULL_PARTS:
            if state_key(task, part) in state:
                del state[state_key(task, part)]
    saved = entry.stamp if persist else ""
    meta.update(stamp=entry.stamp, saved=saved)
    state[state_key(task, "meta")] = ConfigRecord(meta)  # type: ignore[arg-type]
