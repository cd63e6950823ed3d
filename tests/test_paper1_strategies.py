"""Paper 1 strategy hooks and server tasks, called with hand-built records and tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _messages import received  # tests/ is on sys.path
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from flwr_semcom.accounting import CommLedger
from flwr_semcom.config import ConfigError, compose_config
from flwr_semcom.losses.decur import DeCURLoss
from flwr_semcom.paper1.data import partition_role
from flwr_semcom.paper1.settings import check_pretrain_config, method_key, resolve_placement
from flwr_semcom.paper1.stability import NonFiniteError
from flwr_semcom.paper1.stage1 import decur_server
from flwr_semcom.paper1.stage2 import finetune_server
from flwr_semcom.runtime.messaging import ClientInfo
from flwr_semcom.split.schedule import BatchPlan
from strategies.fedavg_modality import (
    FedAvgModality,
    aggregate_by_modality,
    join_modalities,
    split_modalities,
)
from strategies.pretrain import LocalPretrain, ServerPretrain

TINY = (
    "data.num_samples=40 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "model.widths=[4,8] pretrain.projector=[8,8] pretrain.batch_size=8"
)
CLIENTS = [
    ClientInfo(11, 0, "rgb"),
    ClientInfo(12, 1, "rgb"),
    ClientInfo(21, 2, "depth"),
    ClientInfo(22, 3, "depth"),
]


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 1
    TaskIdentity.task_id = 1


def _rec(**arrays: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def _reply(src: int, content: RecordDict) -> Message:
    return received(content, "train.p1_pretrain_local", src=src, message_id=f"r{src}")


# ---------------------------------------------------------------- settings
def test_placements_defaults_and_impossible_pairs() -> None:
    assert resolve_placement("decur", "auto") == "split"
    assert resolve_placement("barlow_twins", "auto") == "local"
    assert resolve_placement("simclr", "auto") == "local"
    assert resolve_placement("none", "auto") == "none"
    assert resolve_placement("decur", "server") == "server"
    assert resolve_placement("simclr", "server") == "server"
    with pytest.raises(ConfigError, match="'local' is not valid for method 'decur'.*Barlow Twins"):
        resolve_placement("decur", "local")
    with pytest.raises(ConfigError, match="'split' is not valid for method 'simclr'"):
        resolve_placement("simclr", "split")
    with pytest.raises(ConfigError, match="pretrain.placement: invalid value 'cloud'"):
        resolve_placement("decur", "cloud")
    assert method_key("supervised") == "none"
    with pytest.raises(ConfigError, match="unknown method 'byol'"):
        method_key("byol")


def test_config_validation_names_the_key() -> None:
    cfg = compose_config("multimodal", TINY)
    check_pretrain_config(cfg)
    with pytest.raises(ConfigError, match="pretrain.placement"):
        check_pretrain_config(compose_config("multimodal", "pretrain.placement=local"))
    with pytest.raises(ConfigError, match="pretrain.lr"):
        compose_config("multimodal", "pretrain.lr=-1")
    with pytest.raises(ConfigError, match="pretrain.augment.hue"):
        check_pretrain_config(compose_config("multimodal", "pretrain.augment.hue=0.9"))
    with pytest.raises(ConfigError, match="experiment.methods"):
        compose_config("multimodal", "experiment.methods=[decur,decur]")


# ---------------------------------------------------------------- FedAvg per modality
def test_aggregate_by_modality_is_sample_weighted_within_each_modality() -> None:
    items = [
        ("rgb", _rec(w=np.array([1.0, 2.0], np.float32), n=np.array(3, np.int64)), 1.0),
        ("rgb", _rec(w=np.array([4.0, 8.0], np.float32), n=np.array(6, np.int64)), 3.0),
        ("depth", _rec(w=np.array([10.0, 10.0], np.float32), n=np.array(1, np.int64)), 5.0),
    ]
    avg = aggregate_by_modality(items)
    np.testing.assert_allclose(avg["rgb"]["w"].numpy(), [0.25 * 1 + 0.75 * 4, 0.25 * 2 + 0.75 * 8])
    assert avg["rgb"]["n"].numpy() == 5  # rint(0.25 * 3 + 0.75 * 6 = 5.25)
    assert avg["rgb"]["n"].numpy().dtype == np.int64
    np.testing.assert_allclose(avg["depth"]["w"].numpy(), [10.0, 10.0])  # never mixed with rgb
    with pytest.raises(ValueError, match="shapes"):
        aggregate_by_modality(
            [
                ("rgb", _rec(w=np.zeros(2, np.float32)), 1.0),
                ("rgb", _rec(w=np.zeros(3, np.float32)), 1.0),
            ]
        )
    with pytest.raises(ValueError, match="num-examples must be > 0"):
        aggregate_by_modality([("rgb", _rec(w=np.zeros(2, np.float32)), 0.0)])


def test_join_and_split_modalities_round_trip() -> None:
    per = {"rgb": _rec(a=np.ones(2, np.float32)), "depth": _rec(a=np.zeros(3, np.float32))}
    back = split_modalities(join_modalities(per))
    assert set(back) == {"rgb", "depth"}
    assert back["depth"]["a"].numpy().shape == (3,)
    with pytest.raises(ValueError, match="not '<modality>/<name>'"):
        split_modalities(_rec(a=np.ones(1, np.float32)))


def test_fedavg_modality_configure_train_sends_each_modality_its_slice() -> None:
    ledger = CommLedger()
    strategy = FedAvgModality(CLIENTS, "train.p1_pretrain_local", stage="pretrain", ledger=ledger)
    arrays = join_modalities(
        {"rgb": _rec(w=np.ones(10, np.float32)), "depth": _rec(w=np.zeros(4, np.float32))}
    )
    msgs = list(strategy.configure_train(3, arrays, ConfigRecord({"upload": True}), None))  # type: ignore[arg-type]
    assert [m.metadata.dst_node_id for m in msgs] == [11, 12, 21, 22]
    assert all(m.metadata.message_type == "train.p1_pretrain_local" for m in msgs)
    assert msgs[0].content.array_records["weights"]["w"].numpy().shape == (10,)
    assert msgs[3].content.array_records["weights"]["w"].numpy().shape == (4,)
    assert msgs[1].content.config_records["config"]["round"] == 3
    # parameters down: 2 × 40 bytes (rgb) + 2 × 16 bytes (depth)
    assert ledger.total("bytes", kind="parameters", direction="down") == 2 * 40 + 2 * 16
    # control: "upload" (bool, 1 byte) + "round" (int, 8 bytes) per client
    assert ledger.total("bytes", kind="control") == 4 * 9
    empty = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord({}), None))  # type: ignore[arg-type]
    assert all("weights" not in m.content for m in empty)


def test_fedavg_modality_aggregate_train_averages_per_modality() -> None:
    ledger = CommLedger()
    strategy = FedAvgModality(CLIENTS, "train.p1_pretrain_local", stage="pretrain", ledger=ledger)
    replies = []
    for c, value, n in zip(CLIENTS, (1.0, 3.0, 10.0, 20.0), (10, 30, 1, 3)):
        content = RecordDict(
            {
                "metrics": MetricRecord({"loss": value, "num-examples": n}),
                "weights": _rec(w=np.full(2, value, np.float32)),
            }
        )
        replies.append(_reply(c.node_id, content))
    arrays, metrics = strategy.aggregate_train(2, replies)
    assert arrays is not None and metrics is not None
    per = split_modalities(arrays)
    np.testing.assert_allclose(per["rgb"]["w"].numpy(), [2.5, 2.5])  # (10·1 + 30·3) / 40
    np.testing.assert_allclose(per["depth"]["w"].numpy(), [17.5, 17.5])  # (1·10 + 3·20) / 4
    assert metrics["num-examples"] == 44
    assert metrics["loss"] == pytest.approx((10 * 1 + 30 * 3 + 1 * 10 + 3 * 20) / 44)
    assert ledger.total("bytes", kind="parameters", direction="up") == 4 * 8
    assert strategy.configure_evaluate(1, ArrayRecord(), ConfigRecord({}), None) == []  # type: ignore[arg-type]


def _local(**kw: object) -> LocalPretrain:
    args: dict = {
        "message_type": "train.p1_pretrain_local",
        "set_weights_action": "train.p1_set_weights",
        "config": {"method": "simclr"},
        "fedavg": False,
        "ledger": CommLedger(),
        "method": "simclr",
    }
    args.update(kw)
    return LocalPretrain(CLIENTS, **args)


def test_local_pretrain_messages_carry_typed_values_only() -> None:
    ledger = CommLedger()
    local = _local(ledger=ledger)
    msgs = list(local.configure_train(2, ArrayRecord(), local.base_config(), None))  # type: ignore[arg-type]
    config = msgs[0].content.config_records["config"]
    assert dict(config) == {"method": "simclr", "upload": False, "round": 2}
    # control per client: "simclr" (6 UTF-8 bytes) + upload (bool, 1) + round (int, 8)
    assert ledger.total("bytes", kind="control") == 4 * (6 + 1 + 8)
    assert ledger.total("bytes", kind="parameters") == 0  # nothing but control crosses
    assert _local(fedavg=True).base_config()["upload"] is True


def test_local_pretrain_stops_on_a_device_reporting_non_finite_values() -> None:
    local = _local()
    bad = _reply(11, RecordDict({"error": ConfigRecord({"message": "non-finite loss (nan)"})}))
    with pytest.raises(NonFiniteError, match="method 'simclr', stage 'pretrain', round 4"):
        local.check_replies(4, [bad])


class _Trainer:
    """A CentralTrainer with one weight per role."""

    def __init__(self) -> None:
        self.rounds: list[int] = []

    def train_round(self, server_round: int) -> dict[str, float]:
        self.rounds.append(server_round)
        return {"loss": 1.0 / server_round}

    def payload(self, role: str) -> ArrayRecord:
        n = {"rgb": 3, "depth": 5}[role]
        return _rec(w=np.zeros(n, np.float32))


class _Grid:
    """Answers every pushed message at once (records what was sent)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def push_messages(self, messages: list[Message]) -> list[str]:
        self.sent.extend(messages)
        return [f"m{i}" for i in range(len(messages))]

    def pull_messages(self, ids: list[str]) -> list[Message]:
        out = []
        for mid, msg in zip(ids, self.sent[-len(ids) :]):
            out.append(
                received(
                    RecordDict({"info": ConfigRecord({})}),
                    msg.metadata.message_type,
                    src=msg.metadata.dst_node_id,
                    message_id=f"r-{mid}",
                    reply_to=mid,
                )
            )
        return out


def test_server_pretrain_trains_then_counts_one_download_per_device() -> None:
    trainer = _Trainer()
    server = ServerPretrain(
        trainer, download_action="train.p1_init_finetune", download_config={"source": "server"}
    )
    assert server.train_round(1)["loss"] == 1.0 and "train_time_s" in server.train_round(2)
    assert trainer.rounds == [1, 2]
    ledger, grid = CommLedger(), _Grid()
    server.download(grid, CLIENTS, ledger=ledger, server_round=2)  # type: ignore[arg-type]
    assert [m.content.config_records["config"]["source"] for m in grid.sent] == ["server"] * 4
    assert [m.content.array_records["encoder"]["w"].numpy().size for m in grid.sent] == [3, 3, 5, 5]
    # parameters down: 2 × 3 + 2 × 5 float32; control: "server" (6 bytes) per device
    assert ledger.total("bytes", kind="parameters", direction="down", stage="pretrain") == 64
    assert ledger.total("bytes", kind="control", stage="pretrain") == 4 * 6


def test_one_partition_rule() -> None:
    mods = ["rgb", "depth"]
    assert [partition_role(mods, 1, p) for p in range(2)] == [("rgb", 0), ("depth", 0)]
    assert [partition_role(mods, 2, p) for p in range(4)] == [
        ("rgb", 0),
        ("rgb", 1),
        ("depth", 0),
        ("depth", 1),
    ]
    with pytest.raises(ConfigError, match="partition-id: 4 out of range.*0..3"):
        partition_role(mods, 2, 4)


# ---------------------------------------------------------------- server tasks
def _plan(n: int) -> BatchPlan:
    return BatchPlan(0, torch.arange(n), 1, 2)


def test_decur_server_loss_and_gradients_match_the_decur_loss() -> None:
    cfg = compose_config("multimodal", TINY)
    server = decur_server(cfg, clients=2)
    server.start_round(5)
    g = torch.Generator().manual_seed(0)
    p1, p2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    intra1, intra2 = 0.7, 1.3
    ups = [
        {"p": p1, "intra": torch.full((6, 1), intra1 / 6)},
        {"p": p2, "intra": torch.full((6, 1), intra2 / 6)},
    ]
    step = server.train_step(ups, _plan(6))
    ref = DeCURLoss(common_dim=6)  # 0.75 × 8
    q1, q2 = p1.clone().requires_grad_(True), p2.clone().requires_grad_(True)
    terms = ref.cross_terms(q1, q2)
    cross = terms["cross_common"] + terms["cross_unique"]
    assert step.loss == pytest.approx(float(cross.detach()) + intra1 + intra2, rel=1e-5)
    cross.backward()
    assert q1.grad is not None and q2.grad is not None
    assert torch.allclose(step.grads[0]["p"], q1.grad, atol=1e-6)
    assert torch.allclose(step.grads[1]["p"], q2.grad, atol=1e-6)
    assert torch.equal(step.grads[0]["intra"], torch.ones(6, 1))  # ∂L/∂(intra share) = 1
    assert step.stats["n"] == 6
    assert len(server.uplink_grad_norms) == 1
    ups[1]["p"] = ups[1]["p"].clone()
    ups[1]["p"][0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="method 'decur', stage 'pretrain', round 5"):
        server.train_step(ups, _plan(6))


def test_decur_server_refuses_single_modality_methods() -> None:
    cfg = compose_config("multimodal", TINY + " pretrain.method=simclr pretrain.placement=local")
    with pytest.raises(ConfigError, match="no cross-modal term"):
        decur_server(cfg, clients=2)


def test_decoder_server_steps_reports_norms_and_stops_on_nan() -> None:
    cfg = compose_config("multimodal", TINY)
    server = finetune_server(cfg, method="supervised", clients=2)
    server.start_round(2)
    ids = server.train_ids[:5]
    plan = BatchPlan(0, ids, 0, 0)
    ups = [{"z_hat": torch.randn(5, 8)}, {"z_hat": torch.randn(5, 8)}]
    before = [p.detach().clone() for p in server.model.parameters()]
    step = server.train_step(ups, plan)
    assert step.stats["n"] == 5 and 0 <= step.stats["correct"] <= 5
    assert step.grads[0]["z_hat"].shape == (5, 8)
    assert any(not torch.equal(a, b) for a, b in zip(before, server.model.parameters()))
    stats = server.norm_stats()
    assert stats["grad_norm_max"] > 0 and stats["uplink_grad_norm_max"] > 0
    ups[0]["z_hat"][0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="method 'supervised', stage 'finetune', round 2"):
        server.train_step(ups, plan)


def test_launcher_hook_refuses_impossible_settings_before_flower_starts() -> None:
    from simulations.experiments import multimodal

    assert multimodal.num_nodes(compose_config("multimodal", TINY)) == 2
    assert multimodal.num_nodes(compose_config("multimodal", "data.devices_per_modality=3")) == 6
    with pytest.raises(ConfigError, match="'split' is not valid for method 'simclr'"):
        multimodal.num_nodes(compose_config("multimodal", "pretrain.placement=split"))
