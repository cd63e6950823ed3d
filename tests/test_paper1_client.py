"""Paper 1 client side: SSL split gradients, client actions and their use of context.state.

The actions compose the config from the node's run config (no ``experiment`` / ``overrides``
in messages) and reach the split runtime's state only through its public helpers.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _messages import received  # tests/ is on sys.path
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from flwr_semcom.config import compose_config
from flwr_semcom.losses.decur import DeCURLoss
from flwr_semcom.paper1 import client as p1
from flwr_semcom.paper1.models import build_ssl_transmitter
from flwr_semcom.paper1.stage1 import decur_server, ssl_device
from flwr_semcom.paper1.stage2 import finetune_device
from flwr_semcom.split import clear_tasks, set_task_model, task_model
from flwr_semcom.split.schedule import BatchPlan

TINY = (
    "data.num_samples=40 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "model.widths=[4,8] pretrain.projector=[8,8] pretrain.batch_size=8"
)
EXPERIMENT = "multimodal"


def _msg(content: RecordDict, message_type: str) -> Message:
    return received(content, message_type, dst=7, message_id="m1", reply_to="", group_id="")


def _context(pid: int = 0, overrides: str = TINY) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": pid, "num-partitions": 2},
        state=RecordDict(),
        run_config={"experiment": EXPERIMENT, "overrides": overrides},
    )


def _config(**values: Any) -> RecordDict:
    return RecordDict({"config": ConfigRecord(values)})


def _tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return dict(record.to_torch_state_dict())


def _record(model: torch.nn.Module) -> ArrayRecord:
    return ArrayRecord(model.state_dict())


def test_split_stage1_update_is_the_gradient_of_the_joint_decur_loss() -> None:
    """Uplink p + intra share through the server equals ∇ of eq. 7 computed in one place."""
    cfg = compose_config(EXPERIMENT, TINY)
    clients = [ssl_device(cfg, i) for i in range(2)]
    server = decur_server(cfg, clients=2)
    batch = BatchPlan(0, torch.arange(8), 42, 0)
    ups, grads_split = [], []
    inputs = [c.inputs(batch, True) for c in clients]
    for c, xs in zip(clients, inputs):
        c.model.train()
        ups.append(c.model(*xs))
    step = server.train_step([{k: v.detach() for k, v in u.items()} for u in ups], batch)
    for c, up, g in zip(clients, ups, step.grads):
        names = sorted(g)
        params = [p for p in c.model.parameters() if p.requires_grad]
        pg = torch.autograd.grad(
            [up[n] for n in names], params, [g[n] for n in names], allow_unused=True
        )
        grads_split.append(pg)
    # the same step in one place: full DeCUR loss (reduction "sum", K_sha = 6 of 8)
    fresh = [ssl_device(cfg, i) for i in range(2)]
    p = []
    for c, xs in zip(fresh, inputs):
        c.model.train()
        t: Any = c.model.transmitter
        p.append((t(xs[0])["p"], t(xs[1])["p"]))
    loss = DeCURLoss(common_dim=6)(p[0][0], p[0][1], p[1][0], p[1][1])
    assert step.loss == pytest.approx(float(loss.detach()), rel=1e-5)
    for c, pg_split in zip(fresh, grads_split):
        params = [q for q in c.model.parameters() if q.requires_grad]
        pg_joint = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        for a, b in zip(pg_split, pg_joint):
            if a is None or b is None:
                assert a is None and b is None  # the unused JSCC head
                continue
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_views_recomputed_from_the_plan_are_identical() -> None:
    cfg = compose_config(EXPERIMENT, TINY)
    c = ssl_device(cfg, 1)
    batch = BatchPlan(3, torch.tensor([5, 1, 9, 2]), 777, 0)
    a1, b1 = c.inputs(batch, True)
    a2, b2 = c.inputs(batch, True)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert c.role == "depth" and a1.shape == (4, 1, 8, 8)


def test_pretrain_local_trains_stores_state_and_uploads_on_request() -> None:
    ctx = _context(0)  # the run config says pretrain.method=decur; the message says which
    msg = _msg(_config(method="barlow_twins", round=1, upload=True), p1.PRETRAIN_LOCAL)
    reply = p1.pretrain_local(msg, ctx)
    metrics = reply.content.metric_records["metrics"]
    assert metrics["num-examples"] == 30  # stratified: 1 of the 4 scenes per class is test
    assert float(metrics["loss"]) > 0 and float(metrics["grad_norm_max"]) > 0  # type: ignore[arg-type]
    assert all(k in ctx.state for k in p1.LOCAL_KEYS)
    first = _tensors(ctx.state.array_records[p1.LOCAL_KEYS[0]])
    uploaded = _tensors(reply.content.array_records["weights"])
    assert torch.equal(uploaded["encoder.net.0.weight"], first["encoder.net.0.weight"])
    init = build_ssl_transmitter(compose_config(EXPERIMENT, TINY), "rgb").state_dict()
    assert not torch.equal(first["encoder.net.0.weight"], init["encoder.net.0.weight"])
    reply2 = p1.pretrain_local(
        _msg(_config(method="barlow_twins", round=2), p1.PRETRAIN_LOCAL), ctx
    )
    assert "weights" not in reply2.content
    second = _tensors(ctx.state.array_records[p1.LOCAL_KEYS[0]])["encoder.net.0.weight"]
    assert not torch.equal(second, first["encoder.net.0.weight"])  # continued from the state


def test_pretrain_local_method_comes_from_the_message_and_changes_the_loss() -> None:
    losses = {}
    for method in ("barlow_twins", "simclr"):
        msg = _msg(_config(method=method, round=1), p1.PRETRAIN_LOCAL)
        reply = p1.pretrain_local(msg, _context(0))
        losses[method] = float(reply.content.metric_records["metrics"]["loss"])  # type: ignore[arg-type]
    assert losses["barlow_twins"] != pytest.approx(losses["simclr"])
    for bad in ({}, {"method": "none"}, {"method": "byol"}):
        with pytest.raises(ValueError, match="config 'method' must be one of decur, barlow"):
            p1.pretrain_local(_msg(_config(round=1, **bad), p1.PRETRAIN_LOCAL), _context(0))


def test_pretrain_local_reads_the_run_config_of_its_node() -> None:
    """The shard size follows the node's run config (data.num_samples 40 vs 80)."""
    msg = _msg(_config(method="simclr", round=1), p1.PRETRAIN_LOCAL)
    bigger = TINY.replace("data.num_samples=40", "data.num_samples=80")
    reply = p1.pretrain_local(msg, _context(0, bigger))
    assert reply.content.metric_records["metrics"]["num-examples"] == 60


def test_pretrain_local_reports_a_non_finite_loss_instead_of_applying_it() -> None:
    ctx = _context(0)
    broken = build_ssl_transmitter(compose_config(EXPERIMENT, TINY), "rgb")
    with torch.no_grad():
        enc: Any = broken.encoder
        enc.net[0].weight[0, 0, 0, 0] = float("nan")
    ctx.state[p1.LOCAL_KEYS[0]] = _record(broken)
    reply = p1.pretrain_local(_msg(_config(method="barlow_twins", round=3), p1.PRETRAIN_LOCAL), ctx)
    message = str(reply.content.config_records["error"]["message"])
    assert "non-finite loss" in message
    assert "method 'barlow_twins', stage 'pretrain', round 3" in message
    assert "client rgb-0" in message
    assert p1.LOCAL_KEYS[1] not in ctx.state  # nothing was applied or stored


@pytest.mark.parametrize("source", ["random", "local", "split", "server"])
def test_init_finetune_puts_the_start_model_where_the_split_runtime_reads_it(source: str) -> None:
    cfg = compose_config(EXPERIMENT, TINY)
    ctx = _context(1)
    pretrained = build_ssl_transmitter(cfg, "depth")
    with torch.no_grad():
        for p in pretrained.encoder.parameters():
            p.add_(1.0)  # distinguishable from the random initial encoder
    content = _config(source=source)
    if source == "local":
        ctx.state[p1.LOCAL_KEYS[0]] = _record(pretrained)
    elif source == "split":
        ssl = ssl_device(cfg, 1)
        ssl_tx: Any = ssl.model.transmitter
        ssl_tx.load_state_dict(pretrained.state_dict())
        set_task_model(ctx.state, "p1_ssl", _record(ssl.model))
    elif source == "server":
        content["encoder"] = _record(pretrained.encoder)
    fresh = finetune_device(cfg, 1).model.state_dict()
    stale = {k: torch.full_like(v, 7) if v.is_floating_point() else v for k, v in fresh.items()}
    set_task_model(ctx.state, "p1_finetune", ArrayRecord(stale))  # replaced, not merged
    p1.init_finetune(_msg(content, p1.INIT_FINETUNE), ctx)
    stored = task_model(ctx.state, "p1_finetune")  # what the split runtime will train from
    assert stored is not None
    state = _tensors(stored)
    key = "transmitter.encoder.net.0.weight"
    expected = pretrained.encoder.state_dict()["net.0.weight"]
    if source == "random":
        assert torch.equal(state[key], fresh[key])
        assert not torch.equal(state[key], expected)
    else:
        assert torch.equal(state[key], expected)
    assert torch.equal(
        state["transmitter.head.linear.weight"], fresh["transmitter.head.linear.weight"]
    )
    with pytest.raises(ValueError, match="source 'cloud' unknown"):
        p1.init_finetune(_msg(_config(source="cloud"), p1.INIT_FINETUNE), ctx)


def test_reset_and_set_weights() -> None:
    ctx = _context(0)
    ctx.state["p1.local.model"] = ArrayRecord()
    set_task_model(ctx.state, "p1_finetune", ArrayRecord())
    ctx.state["other.thing"] = ArrayRecord()
    reply = p1.reset(_msg(RecordDict(), p1.RESET), ctx)
    assert reply.content.config_records["info"]["removed"] == 2
    assert list(ctx.state.keys()) == ["other.thing"]
    assert task_model(ctx.state, "p1_finetune") is None
    avg = _record(build_ssl_transmitter(compose_config(EXPERIMENT, TINY), "rgb"))
    weights = RecordDict({"config": ConfigRecord({"target": "local"}), "weights": avg})
    p1.set_weights(_msg(weights, p1.SET_WEIGHTS), ctx)
    assert list(ctx.state.array_records[p1.LOCAL_KEYS[0]].keys()) == list(avg.keys())
    assert clear_tasks(ctx.state) == 0  # no split state touched
    bad = RecordDict({"config": ConfigRecord({"target": "p1_ssl"}), "weights": ArrayRecord()})
    with pytest.raises(ValueError, match="target 'p1_ssl' unknown; valid: local"):
        p1.set_weights(_msg(bad, p1.SET_WEIGHTS), ctx)


def test_precise_bn_recomputes_only_the_batch_norm_statistics() -> None:
    ctx = _context(0)
    p1.init_finetune(_msg(_config(source="random"), p1.INIT_FINETUNE), ctx)
    stored = task_model(ctx.state, "p1_finetune")
    assert stored is not None
    before = _tensors(stored)
    reply = p1.precise_bn(_msg(_config(samples=16), p1.PRECISE_BN), ctx)
    info = reply.content.config_records["info"]
    assert info["samples"] == 16 and int(info["layers"]) > 0  # type: ignore[arg-type]
    after_rec = task_model(ctx.state, "p1_finetune")
    assert after_rec is not None
    after = _tensors(after_rec)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("running_" in k or "num_batches" in k for k in changed)
    assert any(k.endswith("running_mean") for k in changed)
