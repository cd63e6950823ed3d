"""Client handlers of the split exchange, called directly with hand-built messages."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch
from _split_handlers import ACTIONS, OVERRIDES, TASK, node_context, run_config, to_node
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from flwr_semcom.split.client import split_actions
from flwr_semcom.split.protocol import (
    EVAL_FORWARD,
    QUERY_STATE,
    SET_MODEL,
    TRAIN_STEP,
    config_record,
    encode_plan,
    pack_tensors,
    to_tensor,
    unpack_tensors,
)
from flwr_semcom.split.schedule import client_plans, eval_batches, train_batches

TWO_STEPS = f"{OVERRIDES} strategy.steps_per_message=2"
split_step, split_forward, split_state = (
    ACTIONS[TRAIN_STEP],
    ACTIONS[EVAL_FORWARD],
    ACTIONS[QUERY_STATE],
)


def _config(exchange: int = 0, round_: int = 1, **extra: Any) -> ConfigRecord:
    return config_record(
        TASK, stage="finetune", round=round_, exchange=exchange, profile=False, **extra
    )


@pytest.fixture
def context() -> Iterator[Context]:
    yield node_context(1, TWO_STEPS)


def _plans() -> list[list]:  # type: ignore[type-arg]
    batches = train_batches(torch.arange(16), 4, seed=0, round_=1)
    plans = client_plans(batches, 0, seed=0, stage="finetune", round_=1)
    return [plans[0:2], plans[2:4]]


def _tracked(ctx: Context) -> int:
    rec = ctx.state.array_records[f"split.{TASK}.model"]
    return int(to_tensor(rec["transmitter.encoder.net.1.num_batches_tracked"]))


def _grads_for(reply: Message, sizes: list[int]) -> ArrayRecord:
    ups = unpack_tensors(reply.content.array_records["uplink"], sizes)
    return pack_tensors([{"z_hat": torch.full_like(u["z_hat"], 0.1)} for u in ups])


def test_a_pass_updates_weights_and_counts_batch_norm_once_per_batch(context: Context) -> None:
    g1, g2 = _plans()
    r0 = split_step(
        to_node(RecordDict({"config": _config(0), "plan": encode_plan(g1)}), TRAIN_STEP), context
    )
    z = r0.content.array_records["uplink"]["z_hat"]
    assert z.shape == (8, 8)  # 2 batches of 4 samples, 2k = 8 reals
    assert _tracked(context) == 2
    w0 = to_tensor(
        context.state.array_records[f"split.{TASK}.model"]["transmitter.head.linear.weight"]
    )
    r1 = split_step(
        to_node(
            RecordDict(
                {"config": _config(1), "grads": _grads_for(r0, [4, 4]), "plan": encode_plan(g2)}
            ),
            TRAIN_STEP,
        ),
        context,
    )
    assert _tracked(context) == 4  # the recompute of g1 did not touch the running statistics
    w1 = to_tensor(
        context.state.array_records[f"split.{TASK}.model"]["transmitter.head.linear.weight"]
    )
    assert not torch.equal(w0, w1)
    r2 = split_step(
        to_node(RecordDict({"config": _config(2), "grads": _grads_for(r1, [4, 4])}), TRAIN_STEP),
        context,
    )
    assert "uplink" not in r2.content
    assert f"split.{TASK}.pending" not in context.state
    assert _tracked(context) == 4
    assert int(context.state.config_records[f"split.{TASK}.meta"]["exchange"]) == 2  # type: ignore[arg-type]


def test_out_of_order_and_inconsistent_messages_are_refused(context: Context) -> None:
    g1, _ = _plans()
    with pytest.raises(ValueError, match="has no split state"):
        split_step(to_node(RecordDict({"config": _config(1)}), TRAIN_STEP), context)
    r0 = split_step(
        to_node(RecordDict({"config": _config(0), "plan": encode_plan(g1)}), TRAIN_STEP), context
    )
    with pytest.raises(ValueError, match="after exchange 0 of round 1; a message was lost"):
        split_step(
            to_node(
                RecordDict({"config": _config(2), "grads": _grads_for(r0, [4, 4])}), TRAIN_STEP
            ),
            context,
        )
    with pytest.raises(ValueError, match="carries no gradients"):
        split_step(to_node(RecordDict({"config": _config(1)}), TRAIN_STEP), context)
    context.state[f"split.{TASK}.pending"] = encode_plan(g1[:1])  # 4 samples pending
    with pytest.raises(ValueError, match="8 rows, expected 4"):
        bad = _grads_for(r0, [4, 4])
        split_step(to_node(RecordDict({"config": _config(1), "grads": bad}), TRAIN_STEP), context)
    with pytest.raises(ValueError, match="no 'config' record"):
        split_step(to_node(RecordDict(), TRAIN_STEP), context)


def test_evaluation_leaves_the_state_unchanged(context: Context) -> None:
    g1, _ = _plans()
    split_step(
        to_node(RecordDict({"config": _config(0), "plan": encode_plan(g1)}), TRAIN_STEP), context
    )
    before = {
        k: to_tensor(v) for k, v in context.state.array_records[f"split.{TASK}.model"].items()
    }
    plan = client_plans(eval_batches(torch.arange(10), 4), 0, seed=0, stage="eval", round_=0)
    msg = to_node(RecordDict({"config": _config(), "plan": encode_plan(plan)}), EVAL_FORWARD)
    a = split_forward(msg, context)
    b = split_forward(msg, context)
    assert a.content.array_records["uplink"]["z_hat"].shape == (10, 8)
    assert torch.equal(
        to_tensor(a.content.array_records["uplink"]["z_hat"]),
        to_tensor(b.content.array_records["uplink"]["z_hat"]),
    )
    after = context.state.array_records[f"split.{TASK}.model"]
    assert all(torch.equal(before[k], to_tensor(after[k])) for k in before)


def test_state_query_reports_role_and_weights(context: Context) -> None:
    info = split_state(to_node(RecordDict({"config": _config()}), QUERY_STATE), context)
    rec = info.content.config_records["info"]
    assert rec["role"] == "rgb" and rec["partition-id"] == 0 and rec["error"] == ""
    assert "state" not in info.content
    full = split_state(to_node(RecordDict({"config": _config(weights=True)}), QUERY_STATE), context)
    assert "transmitter.head.linear.weight" in full.content.array_records["state"]
    spare = Context(
        1, 9, {"partition-id": 5, "num-partitions": 6}, RecordDict(), run_config(TWO_STEPS)
    )
    rep = split_state(to_node(RecordDict({"config": _config()}), QUERY_STATE), spare)
    assert "partition-id: 5 out of range" in str(rep.content.config_records["info"]["error"])


def test_unknown_tasks_and_task_parameters_are_refused(context: Context) -> None:
    other = ConfigRecord({"task": "no_such_task", "round": 1})
    with pytest.raises(ValueError, match="unknown split task 'no_such_task'; this client serves"):
        split_state(to_node(RecordDict({"config": other}), QUERY_STATE), context)
    bad = config_record(TASK, {"method": "decur"}, round=1)
    rep = split_state(to_node(RecordDict({"config": bad}), QUERY_STATE), context)
    assert "unknown task parameter(s) ['method']" in str(
        rep.content.config_records["info"]["error"]
    )
    with pytest.raises(ValueError, match="reserved key"):
        config_record(TASK, {"round": 3})


def test_set_model_installs_weights_and_fresh_forgets_the_optimizer(context: Context) -> None:
    g1, _ = _plans()
    split_step(
        to_node(RecordDict({"config": _config(0), "plan": encode_plan(g1)}), TRAIN_STEP), context
    )
    model = context.state.array_records[f"split.{TASK}.model"]
    zeros = ArrayRecord({k: torch.zeros_like(to_tensor(v)) for k, v in model.items()})
    rep = ACTIONS[SET_MODEL](
        to_node(RecordDict({"config": config_record(TASK), "weights": zeros}), SET_MODEL), context
    )
    assert rep.content.config_records["info"]["fresh"] is False
    assert f"split.{TASK}.optim" in context.state  # kept: FedAvg of the weights only
    stored = context.state.array_records[f"split.{TASK}.model"]
    assert all(float(to_tensor(v).abs().sum()) == 0.0 for v in stored.values())
    fresh = config_record(TASK, fresh=True)
    ACTIONS[SET_MODEL](to_node(RecordDict({"config": fresh, "weights": zeros}), SET_MODEL), context)
    assert sorted(k for k in context.state if k.startswith("split.")) == [f"split.{TASK}.model"]
    wrong = ArrayRecord({"w": torch.zeros(2)})
    with pytest.raises(ValueError, match="does not fit the model"):
        ACTIONS[SET_MODEL](
            to_node(RecordDict({"config": fresh, "weights": wrong}), SET_MODEL), context
        )


def test_a_task_is_built_once_per_run_node_and_parameters() -> None:
    from flwr.app import Context as Ctx

    from flwr_semcom.split import ClientTask, DeviceTask

    built: list[tuple[int, str]] = []

    def factory(context: Ctx, params: Mapping[str, Any]) -> ClientTask:
        built.append((context.node_id, str(params.get("tag", ""))))
        return DeviceTask(torch.nn.Linear(3, 4), torch.randn(5, 3), optimizer=torch.optim.SGD)

    actions = split_actions({"vec": factory})
    ctxs = [Ctx(77, n, {"partition-id": n}, RecordDict(), {}) for n in (1, 2)]
    for tag in ("a", "a", "b"):
        for ctx in ctxs:
            rec = config_record("vec", {"tag": tag})
            reply = actions[QUERY_STATE](to_node(RecordDict({"config": rec}), QUERY_STATE), ctx)
            assert reply.content.config_records["info"]["role"] == "device"
    assert built == [(1, "a"), (2, "a"), (1, "b"), (2, "b")]
