"""Non-finite guard (issue #9, item 4): NaN / inf is never aggregated, installed or saved.

Every test injects NaN or inf into hand-built Flower records (or tensors) and checks that the
receiving side refuses or drops it, names what and where in one line, and leaves no trace.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _messages import received  # tests/ is on sys.path
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity
from torch import nn

import flwr_semcom.guard as guard_mod
from flwr_semcom.checkpoint import safe_load_state
from flwr_semcom.guard import (
    NonFiniteError,
    check_finite,
    finite_replies,
    nonfinite_summary,
)
from flwr_semcom.runtime.messaging import ClientInfo

NAN = float("nan")


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 1
    TaskIdentity.task_id = 1


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The guard's WARNING lines (Flower's logger does not propagate to caplog)."""
    lines: list[str] = []

    def fake_log(level: int, fmt: str, *args: Any) -> None:
        lines.append(fmt % args)

    monkeypatch.setattr(guard_mod, "log", fake_log)
    import strategies.fedavg_modality as fm

    monkeypatch.setattr(fm, "log", fake_log)
    return lines


def _msg(src: int, content: RecordDict, message_type: str = "train.x") -> Message:
    return received(content, message_type, src=src)


def _rec(**arrays: Any) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()})


# ---------------------------------------------------------------- the guard itself
def test_summary_finds_nan_and_inf_in_every_container() -> None:
    assert nonfinite_summary(torch.ones(3)) is None
    assert nonfinite_summary({"a": torch.ones(2), "b": np.arange(3)}) is None
    assert nonfinite_summary(np.array([1, 2], dtype=np.int64)) is None  # integers: always finite
    bad = torch.tensor([1.0, NAN, math.inf, NAN])
    assert nonfinite_summary(bad) == "'value' (2 NaN, 1 inf of 4 values)"
    assert nonfinite_summary({"w": bad}) == "'w' (2 NaN, 1 inf of 4 values)"
    assert "'arrays/w'" in str(nonfinite_summary(RecordDict({"arrays": _rec(w=[1.0, NAN])})))
    assert "'1.z'" in str(nonfinite_summary([{"z": torch.ones(1)}, {"z": torch.tensor([NAN])}]))
    assert nonfinite_summary(math.inf) == "'value' (inf)"
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.bias[0] = math.inf
    assert nonfinite_summary(lin) == "'bias' (0 NaN, 1 inf of 2 values)"


def test_check_finite_raises_one_line_naming_what_where_round() -> None:
    with pytest.raises(NonFiniteError) as info:
        check_finite(
            "received weights",
            {"w": torch.tensor([NAN])},
            where="install at node 3",
            round_=4,
            consequence="not installed",
        )
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == (
        "non-finite received weights: 'w' (1 NaN, 0 inf of 1 values) in stage "
        "'install at node 3', round 4; not installed"
    )


def test_paper1_class_is_the_guard_class_with_its_old_message() -> None:
    from flwr_semcom.paper1.stability import NonFiniteError as P1Error

    assert P1Error is NonFiniteError
    err = P1Error("simclr", "pretrain", 4, "loss (nan)")
    assert str(err) == (
        "non-finite loss (nan) in method 'simclr', stage 'pretrain', round 4; training of "
        "this method stopped (lower the learning rate or check the data)"
    )
    assert (err.method, err.stage, err.round) == ("simclr", "pretrain", 4)


def test_finite_replies_drops_nan_update_with_a_warning(warnings: list[str]) -> None:
    good = _msg(11, RecordDict({"arrays": _rec(w=[1.0, 2.0])}))
    bad = _msg(12, RecordDict({"arrays": _rec(w=[NAN, 2.0])}))
    kept = finite_replies([good, bad], where="fedavg", round_=3, key="arrays")
    assert kept == [good]
    assert len(warnings) == 1
    assert "node 12" in warnings[0] and "round 3" in warnings[0] and "dropped" in warnings[0]
    with pytest.raises(NonFiniteError, match=r"every node \(node 12: .*round 3; nothing finite"):
        finite_replies([bad], where="fedavg", round_=3, key="arrays")


# ---------------------------------------------------------------- server: aggregators
def test_fedavg_modality_never_averages_a_nan_update(warnings: list[str]) -> None:
    from strategies.fedavg_modality import FedAvgModality

    clients = [ClientInfo(11, 0, "rgb"), ClientInfo(12, 1, "rgb"), ClientInfo(21, 2, "depth")]
    strategy = FedAvgModality(clients, "train.p1_pretrain_local", stage="pretrain")

    def reply(src: int, w: list[float]) -> Message:
        metrics = MetricRecord({"num-examples": 10, "loss": 1.0})
        return _msg(src, RecordDict({"weights": _rec(w=w), "metrics": metrics}))

    arrays, _ = strategy.aggregate_train(
        2, [reply(11, [1.0, 1.0]), reply(12, [NAN, 5.0]), reply(21, [3.0, 3.0])]
    )
    assert arrays is not None
    np.testing.assert_allclose(arrays["rgb/w"].numpy(), [1.0, 1.0])  # node 12 dropped
    np.testing.assert_allclose(arrays["depth/w"].numpy(), [3.0, 3.0])
    assert any("client 1:rgb" in w and "round 2" in w for w in warnings)
    with pytest.raises(NonFiniteError, match="rgb models from every device.*round 2"):
        strategy.aggregate_train(2, [reply(11, [math.inf, 1.0]), reply(21, [3.0, 3.0])])


def test_fedavg_alignment_drops_nan_upload() -> None:
    from flwr_semcom.alignment.recovery import RecoveryModel
    from strategies.fedavg_alignment import FedAvgAlignment
    from strategies.slf import Link

    link = Link(transmitter=11, receiver=12, crossover=0.0, source="mnist", epsilon=0.0)
    strategy = FedAvgAlignment(link, RecoveryModel(10.0, 5.0, 1.0))

    def reply(src: int, w: list[float]) -> Message:
        metrics = MetricRecord({"num-examples": 10, "flops": 1.0})
        return _msg(src, RecordDict({"arrays": _rec(w=w), "metrics": metrics}))

    arrays, _ = strategy.aggregate_train(1, [reply(11, [2.0]), reply(12, [NAN])])
    assert arrays is not None
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0])
    with pytest.raises(NonFiniteError, match="nothing finite to aggregate"):
        strategy.aggregate_train(2, [reply(11, [NAN]), reply(12, [math.inf])])


class _Grid:
    """Answers every message with ``content``; records what was sent."""

    def __init__(self, content: RecordDict) -> None:
        self.content = content
        self.sent: list[str] = []
        self._replies: dict[str, Message] = {}

    def push_messages(self, msgs: Any) -> list[str]:
        ids = []
        for m in msgs:
            self.sent.append(m.metadata.message_type)
            mid = f"m{len(self._replies)}"
            self._replies[mid] = received(
                self.content, m.metadata.message_type, src=m.metadata.dst_node_id, reply_to=mid
            )
            ids.append(mid)
        return ids

    def pull_messages(self, ids: Any) -> list[Message]:
        return [self._replies.pop(i) for i in list(ids) if i in self._replies]


def test_slf_strategy_refuses_to_forward_nan_parameters() -> None:
    from flwr_semcom.alignment.recovery import RecoveryModel
    from strategies.slf import Link, SLFStrategy

    link = Link(transmitter=11, receiver=12, crossover=0.0, source="mnist", epsilon=0.0)
    grid = _Grid(RecordDict({"arrays": _rec(codebook=[[NAN, 0.0]])}))
    slf = SLFStrategy(1, RecoveryModel(10.0, 5.0, 1.0))
    with pytest.raises(NonFiniteError, match=r"codebook\+decoder.*node 12.*not forwarded"):
        slf.start(grid, link)  # type: ignore[arg-type]
    assert grid.sent == ["query.slf_receiver"]  # nothing reached the transmitter


# ---------------------------------------------------------------- clients
def _context(**node_config: Any) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def test_paper1_set_weights_refuses_nan() -> None:
    from flwr_semcom.paper1.client import SET_WEIGHTS, set_weights

    ctx = _context(**{"partition-id": 0})
    content = RecordDict(
        {"config": ConfigRecord({"target": "local"}), "weights": _rec(w=[1.0, NAN])}
    )
    with pytest.raises(NonFiniteError, match="received weights.*not installed"):
        set_weights(_msg(1, content, SET_WEIGHTS), ctx)
    assert len(ctx.state) == 0


def test_slf_install_refuses_nan_and_keeps_the_old_model() -> None:
    from flwr_semcom.alignment import MODEL_KEY, NODE_KEY, slf_handlers
    from flwr_semcom.alignment.messages import INSTALL
    from flwr_semcom.config import compose_config
    from flwr_semcom.slf.factory import device_from_context
    from flwr_semcom.slf.settings import pretraining

    cfg = compose_config("slf_table1")
    model = pretraining(cfg).new_transceiver()
    ctx = Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 1},
        state=RecordDict(),
        run_config={"experiment": "slf_table1", "overrides": ""},
    )
    ctx.state[MODEL_KEY] = ArrayRecord(model.state_dict())
    ctx.state[NODE_KEY] = ConfigRecord(
        {"transceiver": "T2", "role": "receiver", "source": "mnist", "epsilon": 0.0}
    )
    before = {k: v.numpy().copy() for k, v in ctx.state.array_records[MODEL_KEY].items()}
    state = {k: v.clone() for k, v in model.receiver_state_dict().items()}
    first = next(iter(state))
    state[first].view(-1)[0] = NAN
    content = RecordDict(
        {"arrays": ArrayRecord(state), "config": ConfigRecord({"scope": "receiver"})}
    )
    with pytest.raises(NonFiniteError, match=r"received parameters.*from node 5.*not installed"):
        slf_handlers(device_from_context)[INSTALL](_msg(5, content, INSTALL), ctx)
    after = ctx.state.array_records[MODEL_KEY]
    assert all(np.array_equal(before[k], after[k].numpy()) for k in before)


def _vector_device(context: Context, params: Any) -> Any:
    """A generic split device: a linear encoder over 16 random vectors, ideal channel."""
    from flwr_semcom.split import DeviceTask

    torch.manual_seed(3)
    data = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    return DeviceTask(
        torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8)),
        data,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
    )


def test_split_client_refuses_nan_gradients_and_keeps_its_weights() -> None:
    from flwr_semcom.split import split_actions
    from flwr_semcom.split.protocol import (
        TRAIN_STEP,
        config_record,
        encode_plan,
        pack_tensors,
        unpack_tensors,
    )
    from flwr_semcom.split.schedule import client_plans, train_batches

    def config(exchange: int) -> ConfigRecord:
        return config_record("vec", stage="finetune", round=1, exchange=exchange)

    split_step = split_actions({"vec": _vector_device})[TRAIN_STEP]
    ctx = _context(**{"partition-id": 0, "num-partitions": 2})
    batches = train_batches(torch.arange(16), 4, seed=0, round_=1)
    plans = client_plans(batches, 0, seed=0, stage="finetune", round_=1)
    r0 = split_step(
        _msg(1, RecordDict({"config": config(0), "plan": encode_plan(plans[:2])}), TRAIN_STEP), ctx
    )
    key = "split.vec.model"
    before = {k: v.numpy().copy() for k, v in ctx.state.array_records[key].items()}
    ups = unpack_tensors(r0.content.array_records["uplink"], [4, 4])
    grads = pack_tensors([{"z_hat": torch.full_like(u["z_hat"], NAN)} for u in ups])
    with pytest.raises(NonFiniteError, match=r"received gradients.*round 1; not applied"):
        split_step(_msg(1, RecordDict({"config": config(1), "grads": grads}), TRAIN_STEP), ctx)
    after = ctx.state.array_records[key]
    assert all(np.array_equal(before[k], after[k].numpy()) for k in before)


# ---------------------------------------------------------------- training loops
def test_split_server_step_refuses_nan_uplink_before_updating() -> None:
    from flwr_semcom.split import DecoderServer
    from flwr_semcom.split.schedule import BatchPlan

    server = DecoderServer(
        torch.nn.Linear(16, 3),
        torch.arange(8) % 3,
        train_ids=torch.arange(4),
        test_ids=torch.arange(4, 8),
        num_clients=2,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
    )
    before = {k: v.clone() for k, v in server.model.state_dict().items()}
    batch = BatchPlan(0, torch.arange(4), 0, 0)
    z = [{"z_hat": torch.zeros(4, 8)}, {"z_hat": torch.zeros(4, 8)}]
    z[1]["z_hat"][2, 3] = NAN
    with pytest.raises(NonFiniteError, match=r"uplinks: '1.z_hat' \(1 NaN.*split server step"):
        server.train_step(z, batch)
    assert all(torch.equal(before[k], v) for k, v in server.model.state_dict().items())


def test_slf_training_loop_stops_on_nan_loss_before_the_step() -> None:
    from flwr_semcom.models.vqvae import VQVAETransceiver
    from flwr_semcom.slf.training import train_transceiver

    model = VQVAETransceiver(in_channels=1, enc_channels=(4,), code_dim=4, codebook_size=4,
                             dec_channels=(4,))  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(8, 1, 8, 8)
    images[3] = NAN
    with pytest.raises(NonFiniteError, match=r"loss \(nan\) at step 0 in stage 'slf transceiver"):
        train_transceiver(
            model, images, steps=2, lr=1e-3, batch_size=8, crossover=0.0, beta=0.25, seed=0
        )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- checkpoints
def test_cache_never_saves_a_nan_model(tmp_path: Path) -> None:
    from flwr_semcom.slf.cache import load_or_train

    def train(m: nn.Linear) -> dict[str, int]:
        with torch.no_grad():
            m.weight.fill_(NAN)
        return {"steps": 1}

    with pytest.raises(NonFiniteError, match="transceiver weights.*not saved"):
        load_or_train(tmp_path, "transceiver", {"a": 1}, lambda: nn.Linear(2, 2), train)
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.json"))


def test_safe_load_refuses_a_nan_checkpoint(tmp_path: Path) -> None:
    src = nn.Linear(2, 2)
    path = tmp_path / "ok.pt"
    torch.save(src.state_dict(), path)
    dst = nn.Linear(2, 2)
    safe_load_state(path, dst)
    assert torch.equal(dst.weight, src.weight)
    with torch.no_grad():
        src.bias.fill_(math.inf)
    torch.save(src.state_dict(), tmp_path / "inf.pt")
    with pytest.raises(NonFiniteError, match=r"checkpoint weights: 'bias'.*not installed"):
        safe_load_state(tmp_path / "inf.pt", dst)
    assert torch.isfinite(dst.bias).all()


def test_run_checkpoint_never_saves_nan_weights(tmp_path: Path) -> None:
    from flwr_semcom.checkpoint import Checkpointer
    from flwr_semcom.config import compose_config

    ckpt = Checkpointer(
        tmp_path, compose_config("split_supervised"), experiment="split_supervised", overrides=""
    )
    good = {"server": {"w": torch.ones(2)}, "rows": [{"loss": NAN}]}  # NaN metrics are data
    ckpt.save(1, good)
    saved = ckpt.path.read_bytes()
    bad = {"server": {"w": torch.tensor([1.0, NAN])}, "clients": {}}
    with pytest.raises(NonFiniteError, match=r"checkpoint weights: 'server.w'.*round 2; not saved"):
        ckpt.save(2, bad)
    assert ckpt.path.read_bytes() == saved  # the previous checkpoint is kept
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left
