"""Client side of the split-learning exchange: the handlers :func:`add_split_client` registers
on a ClientApp (``train.split_step``, ``evaluate.split_forward``, ``query.split_state``,
``query.split_checkpoint``, ``train.split_restore``, ``train.split_set_model``).

Usage (your own ClientApp)::

    app = ClientApp()
    add_split_client(app, {"my_device": lambda context, params: DeviceTask(...)})

A message names its task (``config["task"]``); the handler builds that task with its factory
``factory(context, params)`` (:data:`~flwr_semcom.split.tasks.TaskFactory`; ``params`` = the
task parameters of the message) once per run, node and parameters, and caches it in the
process.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. III-B: devices send noisy features and apply the
gradients the server returns. An autograd graph cannot survive between Flower messages (a
deployment SuperNode starts a fresh process per message, ../shared/FLOWER_NOTES.md §3), so a
``train.split_step`` message is handled in two phases (docs/split.md, "The S schedule"):

1. **apply** the gradients of the previous exchange: recompute each of its batches' forward
   at the weights that produced the features (θ_start, the weights held when this message
   arrives) from the stored plan and seeds, back-propagate the received ∂L/∂ẑ, and take one
   optimizer step per batch, in order;
2. **forward** the next planned batches (train mode, no graph) and return the uplink.

The recompute runs through ``torch.func.functional_call`` on copies of the weights and
buffers, so batch-norm running statistics are updated exactly once per batch (by phase 2),
and the copies of the buffers replay the values the original forward saw.
Weights, optimizer state and the pending plan live in ``context.state``; the built task
objects are cached per process (they hold no node state: every message reloads its node's
weights before use) — except in a per-node worker, which keeps them live between persist
points (:mod:`flwr_semcom.split.live`, docs/split.md "Warm client state").
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flwr_semcom.data.partition import ids_fingerprint
from flwr_semcom.guard import check_finite
from flwr_semcom.split import live
from flwr_semcom.split.compute import apply_gradients, buffers_record, forward_batches
from flwr_semcom.split.protocol import (
    EVAL_FORWARD,
    QUERY_CHECKPOINT,
    QUERY_STATE,
    RESTORE_STATE,
    SET_MODEL,
    TRAIN_STEP,
    MessageSpec,
    decode_plan,
    pack_tensors,
    to_tensor,
    unpack_tensors,
)
from flwr_semcom.split.state import (
    load_module,
    module_record,
    restamp,
    set_task_model,
    state_key,
)
from flwr_semcom.split.tasks import ClientTask, TaskFactory

__all__ = ["Handler", "add_split_client", "split_actions"]

Handler = Callable[[Message, Context], Message]
_CACHE_SIZE = 32


@dataclass
class _Built:
    task: ClientTask
    init_state: dict[str, torch.Tensor]
    device: torch.device


_cache: OrderedDict[tuple[Any, ...], _Built] = OrderedDict()


def _items(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((str(k), v) for k, v in mapping.items()))


def _build(factory: TaskFactory, spec: MessageSpec, context: Context) -> _Built:
    """The task of ``spec`` on this node: built once per (run, node, task, params), cached."""
    key = (
        factory,
        context.run_id,
        context.node_id,
        _items(context.node_config),
        _items(context.run_config),
        spec.task,
        spec.params_key,
    )
    hit = _cache.get(key)
    if hit is not None:
        _cache.move_to_end(key)
        return hit
    task = factory(context, dict(spec.params))
    if not isinstance(task, ClientTask):
        raise TypeError(f"task factory of {spec.task!r} returned {type(task).__name__}")
    device = next((p.device for p in task.model.parameters()), torch.device("cpu"))
    init = {k: v.detach().clone() for k, v in task.model.state_dict().items()}
    built = _Built(task, init, device)
    _cache[key] = built
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return built


def _key(task: str, part: str) -> str:
    return state_key(task, part)


def _factory(tasks: Mapping[str, TaskFactory], spec: MessageSpec, action: str) -> TaskFactory:
    if spec.task not in tasks:
        known = ", ".join(sorted(tasks)) or "(none)"
        raise ValueError(f"{action}: unknown split task {spec.task!r}; this client serves {known}")
    return tasks[spec.task]


def _check_position(spec: MessageSpec, state: RecordDict) -> int:
    """Check the exchange follows the stored one; return the round of the pending gradients."""
    meta_key = _key(spec.task, "meta")
    if meta_key not in state:
        if spec.exchange != 0:
            raise ValueError(
                f"{TRAIN_STEP}: got exchange {spec.exchange} of round {spec.round} but this client "
                "has no split state (the pass must start with exchange 0)"
            )
        if spec.round > 1 and not spec.fresh:  # a restarted node: never re-initialise silently
            raise ValueError(
                f"{TRAIN_STEP}: got exchange 0 of round {spec.round} but this client has no split "
                "state (the node restarted and lost it?); refused instead of training on from "
                "the initial weights: the server must restore it (train.split_restore) or mark "
                "the message fresh"
            )
        return spec.round
    last = state.config_records[meta_key]
    last_round, last_exchange = int(last["round"]), int(last["exchange"])  # type: ignore[arg-type]
    if spec.exchange != 0 and (spec.round, spec.exchange) != (last_round, last_exchange + 1):
        raise ValueError(
            f"{TRAIN_STEP}: got exchange {spec.exchange} of round {spec.round} after exchange "
            f"{last_exchange} of round {last_round}; a message was lost or repeated"
        )
    return last_round


def split_step(tasks: Mapping[str, TaskFactory], msg: Message, context: Context) -> Message:
    """``train.split_step``: apply the previous exchange's gradients, forward the next plan."""
    t0 = time.perf_counter()
    spec = MessageSpec.from_message(msg, TRAIN_STEP)
    built = _build(_factory(tasks, spec, TRAIN_STEP), spec, context)
    task, device = built.task, built.device
    grads_round = _check_position(spec, context.state)
    opt, pending, buffers = live.open_step(built, context, spec.task)
    # The pending gradients belong to the batches of the previous message's round.
    lr = task.round_lr(grads_round)
    if lr is not None:
        for group in opt.param_groups:
            group["lr"] = lr
    t_load = time.perf_counter()

    grads = None
    if "grads" in msg.content:
        if pending is None or buffers is None:
            raise ValueError(
                f"{TRAIN_STEP}: received gradients but no pending plan is stored on this client"
            )
        prev = decode_plan(pending)
        grads = unpack_tensors(msg.content.array_records["grads"], [b.size for b in prev], "grads")
        check_finite(  # non-finite guard (issue #9): never applied
            "received gradients",
            grads,
            where=TRAIN_STEP,
            round_=spec.round,
            consequence="not applied",
        )
    elif spec.exchange != 0:
        raise ValueError(f"{TRAIN_STEP}: exchange {spec.exchange} carries no gradients")
    plan = decode_plan(msg.content.array_records["plan"]) if "plan" in msg.content else None
    content = RecordDict()
    try:  # from here on the weights change: a failure leaves no live state behind
        if grads is not None:
            before = {k: to_tensor(v) for k, v in buffers.items()}  # type: ignore[union-attr]
            apply_gradients(
                task, opt, prev, grads, before, device,
                schedule=spec.schedule, compensation=spec.compensation,
            )  # fmt: skip
        if plan is not None:
            buffers = buffers_record(task.model)
            content["uplink"] = pack_tensors(forward_batches(task, plan, True, device))
            pending = msg.content.array_records["plan"]
        else:
            pending = buffers = None
        t_compute = time.perf_counter()
        check_finite(
            "client weights",
            task.model,
            where=TRAIN_STEP,
            round_=spec.round,
            consequence="not stored",
        )
        live.save_step(
            built,
            context,
            spec.task,
            (spec.round, spec.exchange),
            opt,
            (pending, buffers),
            persist=spec.persist or plan is None,  # the end of a pass is a persist point
        )
    except BaseException:
        live.discard(context, spec.task)
        raise
    if spec.profile:
        t_end = time.perf_counter()
        content["timing"] = MetricRecord(
            {"load_s": t_load - t0, "compute_s": t_compute - t_load, "save_s": t_end - t_compute}
        )
    return Message(content, reply_to=msg)


def split_forward(tasks: Mapping[str, TaskFactory], msg: Message, context: Context) -> Message:
    """``evaluate.split_forward``: uplink of the planned batches in eval mode; no state change."""
    t0 = time.perf_counter()
    spec = MessageSpec.from_message(msg, EVAL_FORWARD)
    if "plan" not in msg.content:
        raise ValueError(f"{EVAL_FORWARD}: the message has no 'plan' record")
    built = _build(_factory(tasks, spec, EVAL_FORWARD), spec, context)
    live.ensure_model(built, context, spec.task)
    plan = decode_plan(msg.content.array_records["plan"])
    t_load = time.perf_counter()
    uplink = forward_batches(built.task, plan, False, built.device)
    content = RecordDict({"uplink": pack_tensors(uplink)})
    if spec.profile:
        content["timing"] = MetricRecord(
            {"load_s": t_load - t0, "compute_s": time.perf_counter() - t_load, "save_s": 0.0}
        )
    return Message(content, reply_to=msg)


def split_state(tasks: Mapping[str, TaskFactory], msg: Message, context: Context) -> Message:
    """``query.split_state``: partition and role of this client, and its weights on request.

    A node whose task cannot be built (e.g. a partition the task does not use: the factory
    raises ``ValueError``) still answers, with the reason in ``info["error"]``, so that the
    server can tell spare nodes apart.
    """
    spec = MessageSpec.from_message(msg, QUERY_STATE)
    meta_key = _key(spec.task, "meta")
    meta = context.state.config_records[meta_key] if meta_key in context.state else None
    info = ConfigRecord(
        {
            "partition-id": int(context.node_config.get("partition-id", -1)),  # type: ignore[arg-type]
            "role": "",
            "task": spec.task,
            "round": int(meta["round"]) if meta else 0,  # type: ignore[arg-type]
            "exchange": int(meta["exchange"]) if meta else -1,  # type: ignore[arg-type]
            "error": "",
        }
    )
    factory = _factory(tasks, spec, QUERY_STATE)
    try:
        built = _build(factory, spec, context)
    except ValueError as err:
        if spec.weights:
            raise
        info["error"] = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        return Message(RecordDict({"info": info}), reply_to=msg)
    info["role"] = built.task.role
    ids = built.task.sample_ids()
    if ids is not None:  # the server checks that every device holds the same sample IDs
        info["ids-fingerprint"] = ids_fingerprint(ids)
    content = RecordDict({"info": info})
    if spec.weights:
        live.ensure_model(built, context, spec.task)
        content["state"] = module_record(built.task.model)
    return Message(content, reply_to=msg)


def split_checkpoint(tasks: Mapping[str, TaskFactory], msg: Message, context: Context) -> Message:
    """``query.split_checkpoint``: every record under ``split.<task>.``, named by part."""
    spec = MessageSpec.from_message(msg, QUERY_CHECKPOINT)
    live.flush(context, spec.task)  # a persist point
    prefix = _key(spec.task, "")
    content = RecordDict()
    for name, record in context.state.items():
        if name.startswith(prefix):
            content[name[len(prefix) :]] = record
    if "meta" in content:  # a checkpoint is the same in warm and cold mode: no stamps
        meta = content.config_records["meta"]
        content["meta"] = ConfigRecord({k: meta[k] for k in ("round", "exchange") if k in meta})
    return Message(content, reply_to=msg)


def split_restore(tasks: Mapping[str, TaskFactory], msg: Message, context: Context) -> Message:
    """``train.split_restore``: replace this client's ``split.<task>.*`` records with the
    message's (all but ``config``); the reply is empty."""
    spec = MessageSpec.from_message(msg, RESTORE_STATE)
    live.discard(context, spec.task)
    prefix = _key(spec.task, "")
    state = context.state
    for name in [n for n in state if n.startswith(prefix)]:
        del state[name]
    for part, record in msg.content.items():
        if part != "config":
            state[prefix + part] = record
    restamp(state, spec.task)
    return Message(RecordDict(), reply_to=msg)


def split_set_model(tasks: Mapping[str, TaskFactory], msg: Message, context: Context) -> Message:
    """``train.split_set_model``: store ``"weights"`` as the task's model (checked finite and
    against the task's model); ``config["fresh"]`` also forgets optimizer and exchange state."""
    spec = MessageSpec.from_message(msg, SET_MODEL)
    if "weights" not in msg.content:
        raise ValueError(f"{SET_MODEL}: the message has no 'weights' record")
    weights = msg.content.array_records["weights"]
    check_finite(
        "received weights", weights, where=f"{SET_MODEL} ({spec.task})", consequence="not installed"
    )
    built = _build(_factory(tasks, spec, SET_MODEL), spec, context)
    live.flush(context, spec.task)  # the optimizer and plan stay unless fresh
    live.discard(context, spec.task)
    load_module(built.task.model, weights)  # the same keys and shapes, or ValueError
    set_task_model(context.state, spec.task, weights, fresh=spec.fresh)
    info = ConfigRecord({"task": spec.task, "fresh": spec.fresh})
    return Message(RecordDict({"info": info}), reply_to=msg)


_HANDLERS = {
    TRAIN_STEP: split_step,
    EVAL_FORWARD: split_forward,
    QUERY_STATE: split_state,
    QUERY_CHECKPOINT: split_checkpoint,
    RESTORE_STATE: split_restore,
    SET_MODEL: split_set_model,
}


def split_actions(tasks: Mapping[str, TaskFactory]) -> dict[str, Handler]:
    """The split handlers for ``tasks`` (``{task name: factory}``), by message type."""
    tasks = dict(tasks)
    for name, factory in tasks.items():
        if not isinstance(name, str) or not name or not callable(factory):
            raise TypeError(f"tasks: {name!r} must map a task name to a factory(context, params)")

    def bind(handler: Callable[..., Message]) -> Handler:
        def run(msg: Message, context: Context) -> Message:
            return handler(tasks, msg, context)

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    return {message_type: bind(h) for message_type, h in _HANDLERS.items()}


def add_split_client(app: ClientApp, tasks: Mapping[str, TaskFactory]) -> ClientApp:
    """Register the split-learning handlers for ``tasks`` on ``app``; return ``app``.

    Parameters
    ----------
    app
        Your ClientApp (mods you gave it wrap these handlers too).
    tasks
        ``{task name: factory(context, params) -> ClientTask}``. A message's
        ``config["task"]`` selects the factory; ``params`` are its other non-reserved keys.
    """
    for message_type, handler in split_actions(tasks).items():
        kind, _, action = message_type.partition(".")
        getattr(app, kind)(action)(handler)
    return app
