"""Client side of the split-learning exchange: ``train.split_step``, ``evaluate.split_forward``,
``query.split_state`` (registered in the ClientApp through :data:`ACTIONS`).

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
Weights, optimizer state and the pending plan live in ``context.state`` only; the composed
config and the built task objects are cached per process (they hold no node state: every
message reloads its node's weights before use).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from omegaconf import DictConfig
from torch import nn

from flwr_semcom.config import ConfigError, config_from_run_config, resolve_device
from flwr_semcom.data.partition import ids_fingerprint
from flwr_semcom.guard import check_finite
from flwr_semcom.reliability import maybe_inject
from flwr_semcom.split.protocol import (
    EVAL_FORWARD,
    QUERY_CHECKPOINT,
    QUERY_STATE,
    RESTORE_STATE,
    TRAIN_STEP,
    decode_plan,
    pack_tensors,
    to_tensor,
    unpack_tensors,
)
from flwr_semcom.split.schedule import BatchPlan
from flwr_semcom.split.state import load_module, load_optimizer, module_record, optimizer_records
from flwr_semcom.split.tasks import ClientTask, build_client_task

__all__ = [
    "ACTIONS",
    "MessageSpec",
    "apply_gradients",
    "forward_batches",
    "split_checkpoint",
    "split_forward",
    "split_restore",
    "split_state",
    "split_step",
]


@dataclass(frozen=True)
class MessageSpec:
    """The ``"config"`` record of a split message."""

    experiment: str
    overrides: str
    task: str
    stage: str
    round: int
    exchange: int
    profile: bool
    weights: bool
    attempt: int = 0

    @classmethod
    def from_message(cls, msg: Message, action: str) -> MessageSpec:
        if "config" not in msg.content:
            raise ValueError(f"{action}: the message has no 'config' record")
        rec = msg.content["config"]
        for key in ("experiment", "overrides", "task"):
            if not isinstance(rec.get(key), str):
                raise ValueError(f"{action}: config record needs a string {key!r}")
        return cls(
            experiment=str(rec["experiment"]),
            overrides=str(rec["overrides"]),
            task=str(rec["task"]),
            stage=str(rec.get("stage", "")),
            round=int(rec.get("round", 0)),  # type: ignore[arg-type]
            exchange=int(rec.get("exchange", 0)),  # type: ignore[arg-type]
            profile=bool(rec.get("profile", False)),
            weights=bool(rec.get("weights", False)),
            attempt=int(rec.get("attempt", 0)),  # type: ignore[arg-type]
        )


@dataclass
class _Built:
    task: ClientTask
    init_state: dict[str, torch.Tensor]
    device: torch.device


@lru_cache(maxsize=16)
def _build(experiment: str, overrides: str, task: str, node_items: tuple[Any, ...]) -> _Built:
    cfg = config_from_run_config({"experiment": experiment, "overrides": overrides})
    device = torch.device(resolve_device(str(cfg.device)))
    built = build_client_task(task, cfg, dict(node_items))
    built.model.to(device)
    init = {k: v.detach().clone() for k, v in built.model.state_dict().items()}
    return _Built(built, init, device)


def _setup(spec: MessageSpec, context: Context) -> tuple[DictConfig, _Built]:
    cfg = config_from_run_config({"experiment": spec.experiment, "overrides": spec.overrides})
    torch.set_num_threads(int(cfg.num_threads))
    items = tuple(sorted(context.node_config.items()))
    return cfg, _build(spec.experiment, spec.overrides, spec.task, items)


def _key(task: str, part: str) -> str:
    return f"split.{task}.{part}"


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _to_device(xs: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(x.to(device) for x in xs)


def forward_batches(
    task: ClientTask, batches: Sequence[BatchPlan], train: bool, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """Uplink tensors of ``batches`` (no graph; train mode updates batch-norm statistics)."""
    model = task.model
    model.train(train)
    out: list[dict[str, torch.Tensor]] = []
    with torch.no_grad():
        for b in batches:
            torch.manual_seed(b.noise_seed)
            xs = _to_device(task.inputs(b, train), device)
            up = model(*xs, generator=_generator(b.noise_seed, device))
            out.append({k: v.detach() for k, v in up.items()})
    return out


def apply_gradients(
    task: ClientTask,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[BatchPlan],
    grads: Sequence[Mapping[str, torch.Tensor]],
    buffers_before: Mapping[str, torch.Tensor],
    device: torch.device,
) -> None:
    """One optimizer step per batch with the parameter gradients of the stale forward.

    For batch ``t`` the forward is recomputed at θ_start (the current weights, which produced
    every feature of the group) with the buffers the original forward saw (``buffers_before``
    evolved by batches ``0..t-1``), ∂L/∂uplink is back-propagated to θ_start, and the
    resulting gradient is applied to the live weights with ``optimizer.step()``.
    """
    model = task.model
    model.train()
    named = dict(model.named_parameters())
    stash = {n: p.detach().clone().requires_grad_(p.requires_grad) for n, p in named.items()}
    trainable = [n for n, p in stash.items() if p.requires_grad]
    running = {n: b.detach().clone().to(device) for n, b in buffers_before.items()}
    for b, g in zip(batches, grads):
        torch.manual_seed(b.noise_seed)
        xs = _to_device(task.inputs(b, True), device)
        up = torch.func.functional_call(
            model, {**stash, **running}, xs, {"generator": _generator(b.noise_seed, device)}
        )
        names = sorted(g)
        missing = [n for n in names if n not in up]
        if missing:
            raise ValueError(f"gradients for {missing}, but the client's uplink has {sorted(up)}")
        param_grads = torch.autograd.grad(
            [up[n] for n in names],
            [stash[n] for n in trainable],
            grad_outputs=[g[n].to(device) for n in names],
            allow_unused=True,
        )
        for n, pg in zip(trainable, param_grads):
            named[n].grad = pg
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _restore(built: _Built, state: RecordDict, task: str) -> None:
    model = built.task.model
    key = _key(task, "model")
    if key in state:
        load_module(model, state.array_records[key])
    else:
        model.load_state_dict(built.init_state)


def _optimizer(built: _Built, state: RecordDict, task: str) -> torch.optim.Optimizer:
    opt = built.task.make_optimizer(built.task.model.parameters())
    if _key(task, "optim") in state:
        load_optimizer(
            opt,
            state.array_records[_key(task, "optim")],
            state.config_records[_key(task, "optim_meta")],
        )
    return opt


def _buffers_record(model: nn.Module) -> ArrayRecord:
    rec = ArrayRecord()
    for name, buf in model.named_buffers():
        rec[name] = Array(buf.detach().cpu().contiguous())
    return rec


def split_step(msg: Message, context: Context) -> Message:
    """``train.split_step``: apply the previous exchange's gradients, forward the next plan."""
    t0 = time.perf_counter()
    spec = MessageSpec.from_message(msg, TRAIN_STEP)
    cfg, built = _setup(spec, context)
    partition = int(context.node_config.get("partition-id", -1))  # type: ignore[arg-type]
    maybe_inject(cfg, partition, spec.round, spec.exchange, spec.attempt)  # test-only faults
    task, device, state = built.task, built.device, context.state
    meta_key = _key(spec.task, "meta")
    if meta_key in state:
        last = state.config_records[meta_key]
        last_round, last_exchange = int(last["round"]), int(last["exchange"])  # type: ignore[arg-type]
        expected = (last_round, last_exchange + 1)
        if spec.exchange != 0 and (spec.round, spec.exchange) != expected:
            raise ValueError(
                f"{TRAIN_STEP}: got exchange {spec.exchange} of round {spec.round} after exchange "
                f"{last_exchange} of round {last_round}; a message was lost or repeated"
            )
    elif spec.exchange != 0:
        raise ValueError(
            f"{TRAIN_STEP}: got exchange {spec.exchange} of round {spec.round} but this client "
            "has no split state (the pass must start with exchange 0)"
        )
    _restore(built, state, spec.task)
    opt = _optimizer(built, state, spec.task)
    # The pending gradients belong to the batches of the previous message's round.
    lr = task.round_lr(last_round if meta_key in state else spec.round)
    if lr is not None:
        for group in opt.param_groups:
            group["lr"] = lr
    t_load = time.perf_counter()

    pending_key, buffers_key = _key(spec.task, "pending"), _key(spec.task, "pending_buffers")
    if "grads" in msg.content:
        if pending_key not in state:
            raise ValueError(
                f"{TRAIN_STEP}: received gradients but no pending plan is stored on this client"
            )
        prev = decode_plan(state.array_records[pending_key])
        grads = unpack_tensors(msg.content.array_records["grads"], [b.size for b in prev], "grads")
        check_finite(  # non-finite guard (issue #9): never applied
            "received gradients",
            grads,
            where=TRAIN_STEP,
            round_=spec.round,
            consequence="not applied",
        )
        before = {k: to_tensor(v) for k, v in state.array_records[buffers_key].items()}
        apply_gradients(task, opt, prev, grads, before, device)
    elif spec.exchange != 0:
        raise ValueError(f"{TRAIN_STEP}: exchange {spec.exchange} carries no gradients")
    content = RecordDict()
    if "plan" in msg.content:
        plan = decode_plan(msg.content.array_records["plan"])
        state[buffers_key] = _buffers_record(task.model)
        uplink = forward_batches(task, plan, True, device)
        state[pending_key] = msg.content.array_records["plan"]
        content["uplink"] = pack_tensors(uplink)
    else:
        for key in (pending_key, buffers_key):
            if key in state:
                del state[key]
    t_compute = time.perf_counter()
    check_finite(
        "client weights", task.model, where=TRAIN_STEP, round_=spec.round, consequence="not stored"
    )
    state[_key(spec.task, "model")] = module_record(task.model)
    arrays, opt_meta = optimizer_records(opt)
    state[_key(spec.task, "optim")] = arrays
    state[_key(spec.task, "optim_meta")] = opt_meta
    state[meta_key] = ConfigRecord({"round": spec.round, "exchange": spec.exchange})
    if spec.profile:
        t_end = time.perf_counter()
        content["timing"] = MetricRecord(
            {"load_s": t_load - t0, "compute_s": t_compute - t_load, "save_s": t_end - t_compute}
        )
    return Message(content, reply_to=msg)


def split_forward(msg: Message, context: Context) -> Message:
    """``evaluate.split_forward``: uplink of the planned batches in eval mode; no state change."""
    t0 = time.perf_counter()
    spec = MessageSpec.from_message(msg, EVAL_FORWARD)
    if "plan" not in msg.content:
        raise ValueError(f"{EVAL_FORWARD}: the message has no 'plan' record")
    _, built = _setup(spec, context)
    _restore(built, context.state, spec.task)
    plan = decode_plan(msg.content.array_records["plan"])
    t_load = time.perf_counter()
    uplink = forward_batches(built.task, plan, False, built.device)
    content = RecordDict({"uplink": pack_tensors(uplink)})
    if spec.profile:
        content["timing"] = MetricRecord(
            {"load_s": t_load - t0, "compute_s": time.perf_counter() - t_load, "save_s": 0.0}
        )
    return Message(content, reply_to=msg)


def split_state(msg: Message, context: Context) -> Message:
    """``query.split_state``: partition and role of this client, and its weights on request.

    A node whose task cannot be built (e.g. a partition the task does not use) still answers,
    with the reason in ``info["error"]``, so that the server can tell spare nodes apart.
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
    try:
        _, built = _setup(spec, context)
    except ConfigError as err:
        if spec.weights:
            raise
        info["error"] = str(err)
        return Message(RecordDict({"info": info}), reply_to=msg)
    info["role"] = built.task.role
    ids = built.task.sample_ids()
    if ids is not None:  # the server checks that every device holds the same sample IDs
        info["ids-fingerprint"] = ids_fingerprint(ids)
    content = RecordDict({"info": info})
    if spec.weights:
        _restore(built, context.state, spec.task)
        content["state"] = module_record(built.task.model)
    return Message(content, reply_to=msg)


def split_checkpoint(msg: Message, context: Context) -> Message:
    """``query.split_checkpoint``: every record under ``split.<task>.``, named by part."""
    spec = MessageSpec.from_message(msg, QUERY_CHECKPOINT)
    prefix = _key(spec.task, "")
    content = RecordDict()
    for name, record in context.state.items():
        if name.startswith(prefix):
            content[name[len(prefix) :]] = record
    return Message(content, reply_to=msg)


def split_restore(msg: Message, context: Context) -> Message:
    """``train.split_restore``: replace this client's ``split.<task>.*`` records with the
    message's (all but ``config``); the reply is empty."""
    spec = MessageSpec.from_message(msg, RESTORE_STATE)
    prefix = _key(spec.task, "")
    state = context.state
    for name in [n for n in state if n.startswith(prefix)]:
        del state[name]
    for part, record in msg.content.items():
        if part != "config":
            state[prefix + part] = record
    return Message(RecordDict(), reply_to=msg)


ACTIONS = {
    TRAIN_STEP: split_step,
    EVAL_FORWARD: split_forward,
    QUERY_STATE: split_state,
    QUERY_CHECKPOINT: split_checkpoint,
    RESTORE_STATE: split_restore,
}
