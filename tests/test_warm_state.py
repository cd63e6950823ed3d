"""Warm client state (flwr_semcom/split/live.py): the split handlers driven in-process in
warm mode (a per-node worker) and in cold mode give bit-identical results; stamps keep a stale
live entry from ever being used; persist points; lost state fails with one line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from _split_handlers import ACTIONS, TASK, node_context, to_node  # tests/ is on sys.path
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from flwr_semcom.guard import NonFiniteError
from flwr_semcom.runtime.relay import run_worker_hooks
from flwr_semcom.split import live
from flwr_semcom.split.protocol import (
    EVAL_FORWARD,
    QUERY_CHECKPOINT,
    QUERY_STATE,
    RESTORE_STATE,
    SET_MODEL,
    TRAIN_STEP,
    config_record,
    encode_plan,
    pack_tensors,
    to_tensor,
    unpack_tensors,
)
from flwr_semcom.split.schedule import BatchPlan, client_plans, eval_batches, group, train_batches

FULL = {f"split.{TASK}.{p}" for p in ("model", "optim", "optim_meta", "meta")}
_runs = iter(range(100, 10_000))


def _context() -> Context:
    return node_context(next(_runs))  # a new run each: no live entry is shared


def _call(action: str, content: RecordDict, ctx: Context) -> Message:
    msg = to_node(content, action)
    run_worker_hooks(msg, ctx)  # what the worker does before every message
    return ACTIONS[action](msg, ctx)


def _groups(round_: int, s: int) -> list[list[BatchPlan]]:
    batches = train_batches(torch.arange(16), 4, seed=0, round_=round_)
    return group(client_plans(batches, 0, seed=0, stage="finetune", round_=round_), s)


def _grads(reply: Message, sizes: Sequence[int]) -> ArrayRecord:
    """Gradients that depend on the uplink (so that any divergence shows)."""
    ups = unpack_tensors(reply.content.array_records["uplink"], sizes)
    return pack_tensors([{"z_hat": 0.05 * u["z_hat"] + 0.01} for u in ups])


def _step(ctx: Context, round_: int, j: int, plan: Any, grads: Any, **extra: Any) -> Message:
    content = RecordDict({"config": config_record(TASK, round=round_, exchange=j, **extra)})
    if grads is not None:
        content["grads"] = grads
    if plan is not None:
        content["plan"] = encode_plan(plan)
    return _call(TRAIN_STEP, content, ctx)


def _pass(
    ctx: Context, round_: int, s: int, *, persist_at: Sequence[int] = (), probe: bool = False
) -> list[torch.Tensor]:
    """One pass; the uplinks (and, with ``probe``, an evaluation and a weights query after
    every exchange: they must not disturb anything)."""
    groups = _groups(round_, s)
    out, grads = [], None
    for j in range(len(groups) + 1):
        plan = groups[j] if j < len(groups) else None
        extra = {"persist": True} if j in persist_at else {}
        reply = _step(ctx, round_, j, plan, grads, **extra)
        if plan is not None:
            out.append(to_tensor(reply.content.array_records["uplink"]["z_hat"]))
            grads = _grads(reply, [b.size for b in plan])
        if probe:
            out.append(_evaluate(ctx))
            out.extend(_weights(ctx).values())
    return out


def _evaluate(ctx: Context) -> torch.Tensor:
    plan = client_plans(eval_batches(torch.arange(10), 4), 0, seed=0, stage="eval", round_=0)
    content = RecordDict({"config": config_record(TASK), "plan": encode_plan(plan)})
    return to_tensor(_call(EVAL_FORWARD, content, ctx).content.array_records["uplink"]["z_hat"])


def _weights(ctx: Context) -> dict[str, torch.Tensor]:
    content = RecordDict({"config": config_record(TASK, weights=True)})
    rec = _call(QUERY_STATE, content, ctx).content.array_records["state"]
    return {k: to_tensor(v) for k, v in rec.items()}


def _checkpoint(ctx: Context) -> RecordDict:
    return _call(QUERY_CHECKPOINT, RecordDict({"config": config_record(TASK)}), ctx).content


def _plain(records: RecordDict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rec in records.items():
        if isinstance(rec, ArrayRecord):
            out[name] = {k: np.asarray(v.numpy()) for k, v in rec.items()}
        else:
            out[name] = dict(rec)
    return out


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (torch.Tensor, np.ndarray)):
        assert np.array_equal(np.asarray(a), np.asarray(b)), "not bit-identical"
    else:
        assert a == b


def _split_keys(ctx: Context) -> set[str]:
    return {k for k in ctx.state if k.startswith("split.")}


def _run(warm: bool, s: int, **kw: Any) -> tuple[list[torch.Tensor], RecordDict]:
    ctx = _context()
    with live.warm(warm):
        ups = _pass(ctx, 1, s, **kw) + _pass(ctx, 2, s, **kw)
        return ups, _checkpoint(ctx)


@pytest.mark.parametrize("s", [1, 3])
def test_warm_and_cold_give_bit_identical_weights_optimizer_and_uplinks(s: int) -> None:
    cold_up, cold = _run(False, s, probe=True)
    warm_up, warm = _run(True, s, probe=True)
    assert len(cold_up) == len(warm_up) > 4
    for a, b in zip(cold_up, warm_up):
        assert torch.equal(a, b)
    _assert_same(_plain(cold), _plain(warm))  # the checkpoint: same records, no stamps
    assert set(warm) == {"model", "optim", "optim_meta", "meta"}
    assert dict(warm.config_records["meta"]) == {"round": 2, "exchange": 4 if s == 1 else 2}


def test_persist_points_write_the_full_records_and_only_the_meta_between_them() -> None:
    ctx = _context()
    groups = _groups(1, 1)
    with live.warm():
        r0 = _step(ctx, 1, 0, groups[0], None)
        assert _split_keys(ctx) == {f"split.{TASK}.meta"}  # between persist points
        meta = ctx.state.config_records[f"split.{TASK}.meta"]
        assert meta["saved"] == "" and len(str(meta["stamp"])) == 32
        r1 = _step(ctx, 1, 1, groups[1], _grads(r0, [4]), persist=True)
        assert _split_keys(ctx) == FULL | {f"split.{TASK}.pending", f"split.{TASK}.pending_buffers"}
        meta = ctx.state.config_records[f"split.{TASK}.meta"]
        assert meta["saved"] == meta["stamp"]
        entry = live.current(ctx, TASK)
        assert entry is not None and entry.stamp == meta["stamp"]
        stored = ctx.state.array_records[f"split.{TASK}.model"]
        _assert_same(
            {k: to_tensor(v) for k, v in stored.items()}, entry.built.task.model.state_dict()
        )
        r2 = _step(ctx, 1, 2, groups[2], _grads(r1, [4]))
        assert _split_keys(ctx) == {f"split.{TASK}.meta"}
        r3 = _step(ctx, 1, 3, groups[3], _grads(r2, [4]))
        _step(ctx, 1, 4, None, _grads(r3, [4]))  # the end of the pass
        assert _split_keys(ctx) == FULL
        meta = ctx.state.config_records[f"split.{TASK}.meta"]
        assert meta["saved"] == meta["stamp"] != ""


def test_a_message_of_another_action_sees_the_full_records() -> None:
    ctx = _context()
    with live.warm():
        _step(ctx, 1, 0, _groups(1, 1)[0], None)
        assert _split_keys(ctx) == {f"split.{TASK}.meta"}
        run_worker_hooks(to_node(RecordDict(), "train.other"), ctx)
        assert _split_keys(ctx) >= FULL | {f"split.{TASK}.pending"}
        assert live.current(ctx, TASK) is None  # forgotten: the next step reloads


def test_lost_warm_state_fails_with_one_line() -> None:
    ctx = _context()
    groups = _groups(1, 1)
    with live.warm():
        r0 = _step(ctx, 1, 0, groups[0], None)
    with live.warm():  # a new worker: the live entry is gone
        with pytest.raises(RuntimeError) as err:
            _step(ctx, 1, 1, groups[1], _grads(r0, [4]))
        text = str(err.value)
        assert "\n" not in text
        assert text == (
            f"split task {TASK!r} on node 7 (partition 0): warm state for exchange 0 of round 1 "
            "was lost (the node's worker restarted mid-round); restart the run with --resume"
        )
        with pytest.raises(RuntimeError, match="was lost"):
            _evaluate(ctx)


def test_a_failed_check_before_the_update_keeps_the_live_state() -> None:
    ctx, cold = _context(), _context()
    groups = _groups(1, 1)
    with live.warm(False):
        r0 = _step(cold, 1, 0, groups[0], None)
        reply = _step(cold, 1, 1, groups[1], _grads(r0, [4]))
        want = to_tensor(reply.content.array_records["uplink"]["z_hat"])
    with live.warm():
        r0 = _step(ctx, 1, 0, groups[0], None)
        bad = pack_tensors([{"z_hat": torch.full((4, 8), float("nan"))}])
        with pytest.raises(NonFiniteError):
            _step(ctx, 1, 1, groups[1], bad)
        assert live.current(ctx, TASK) is not None
        got = _step(ctx, 1, 1, groups[1], _grads(r0, [4]))
        assert torch.equal(to_tensor(got.content.array_records["uplink"]["z_hat"]), want)


def test_a_live_entry_of_another_stamp_is_not_used() -> None:
    """Replaying exchange 1 from a copy of the state saved before it (another stamp) must
    reload that state, not continue from the live entry (which is after exchange 1)."""
    ctx = _context()
    groups = _groups(1, 1)
    with live.warm():
        r0 = _step(ctx, 1, 0, groups[0], None, persist=True)
        saved = RecordDict(dict(ctx.state.items()))
        saved_meta = ConfigRecord(dict(ctx.state.config_records[f"split.{TASK}.meta"]))
        saved[f"split.{TASK}.meta"] = saved_meta
        first = _step(ctx, 1, 1, groups[1], _grads(r0, [4]))
        assert live.current(ctx, TASK) is not None
        again = Context(ctx.run_id, ctx.node_id, ctx.node_config, saved, ctx.run_config)
        second = _step(again, 1, 1, groups[1], _grads(r0, [4]))
    a, b = (to_tensor(r.content.array_records["uplink"]["z_hat"]) for r in (first, second))
    assert torch.equal(a, b)


def test_a_live_entry_of_another_run_is_not_used() -> None:
    ctx = _context()
    with live.warm():
        _step(ctx, 1, 0, _groups(1, 1)[0], None)
        entry = live.current(ctx, TASK)
        assert entry is not None
        # another run, same node, a meta that even carries the same stamp: its own records
        other = _context()
        zeros = {k: torch.zeros_like(v) for k, v in entry.built.task.model.state_dict().items()}
        other.state[f"split.{TASK}.model"] = ArrayRecord(zeros)  # type: ignore[arg-type]
        other.state[f"split.{TASK}.meta"] = ConfigRecord(
            {"round": 1, "exchange": 0, "stamp": entry.stamp, "saved": entry.stamp}
        )
        assert all(float(w.abs().sum()) == 0.0 for w in _weights(other).values())
        assert live.current(ctx, TASK) is entry  # untouched


def _set_zero_weights(ctx: Context) -> None:
    weights = _weights(ctx)
    zeros = ArrayRecord({k: torch.zeros_like(v) + 0.01 for k, v in weights.items()})  # type: ignore[arg-type]
    content = RecordDict({"config": config_record(TASK), "weights": zeros})
    _call(SET_MODEL, content, ctx)


def test_set_model_and_restore_replace_the_live_state() -> None:
    def scenario(warm: bool) -> tuple[list[torch.Tensor], dict[str, Any]]:
        ctx = _context()
        with live.warm(warm):
            ups = _pass(ctx, 1, 1)
            ckpt = _checkpoint(ctx)
            ups += _pass(ctx, 2, 1)[:2]  # round 2 half done, then back to the checkpoint
            content = RecordDict(dict(ckpt.items()))
            content["config"] = config_record(TASK)
            _call(RESTORE_STATE, content, ctx)
            ups += _pass(ctx, 2, 1)
            groups = _groups(3, 1)
            r0 = _step(ctx, 3, 0, groups[0], None)
            _set_zero_weights(ctx)  # mid-pass, keeps the optimizer and the pending plan
            r1 = _step(ctx, 3, 1, groups[1], _grads(r0, [4]))
            ups.append(to_tensor(r1.content.array_records["uplink"]["z_hat"]))
            return ups, _plain(_checkpoint(ctx))

    cold_up, cold = scenario(False)
    warm_up, warm = scenario(True)
    for a, b in zip(cold_up, warm_up, strict=True):
        assert torch.equal(a, b)
    _assert_same(cold, warm)
