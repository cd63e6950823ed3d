"""FedAvg for a user's own model: reply contract, learning, seeding, ledger (flwr_semcom.fedavg)."""

from __future__ import annotations

import pytest
import torch
from _messages import received  # tests/ is on sys.path
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from torch import nn
from torch.utils.data import TensorDataset

from flwr_semcom.accounting import CommLedger
from flwr_semcom.channels import AWGNChannel
from flwr_semcom.fedavg import EndToEnd, LedgerFedAvg, add_fedavg_client
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.split import DeviceTask

MODEL_BYTES = (4 * 2 + 2) * 4  # Linear(4, 2): weight + bias, float32


def _blobs(seed: int, n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=g) * 0.5
    x[:, 0] += torch.where(y == 1, 2.0, -2.0)
    return TensorDataset(x, y)


def _model(_: Context) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(4, 2)


def _data(ctx: Context) -> tuple[TensorDataset, TensorDataset]:
    pid = int(ctx.node_config["partition-id"])  # type: ignore[arg-type]
    return _blobs(10 + pid), _blobs(100 + pid, n=32)


def _app(**kwargs: object) -> ClientApp:
    opts: dict = {"optimizer_fn": lambda p: torch.optim.SGD(p, lr=0.1), "batch_size": 16}
    opts.update(kwargs)
    return add_fedavg_client(ClientApp(), _model, _data, **opts)


def _ctx(pid: int = 0) -> Context:
    return Context(1, 7 + pid, {"partition-id": pid}, RecordDict(), {})


def _msg(kind: str, arrays: ArrayRecord, **config: float) -> Message:
    return received(
        RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1, **config})}),
        kind,
    )


def test_train_and_evaluate_replies_follow_flower_fedavg_contract() -> None:
    app = _app()
    init = ArrayRecord(_model(_ctx()).state_dict())
    reply = app(_msg("train", init), _ctx())
    assert set(reply.content.array_records) == {"arrays"}
    state = reply.content.array_records["arrays"].to_torch_state_dict()
    assert {k: v.shape for k, v in state.items()} == {"weight": (2, 4), "bias": (2,)}
    assert not torch.equal(state["weight"], init.to_torch_state_dict()["weight"])  # it trained
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == 64 and 0.0 < float(metrics["train_loss"]) < 1.0  # type: ignore[arg-type]

    ev = app(_msg("evaluate", init), _ctx())
    assert set(ev.content.array_records) == set()
    m = ev.content["metrics"]
    assert m["num-examples"] == 32 and set(m) == {"eval_loss", "eval_acc", "num-examples"}


def test_fedavg_learns_and_ledger_counts_every_parameter_transfer() -> None:
    grid = InProcessGrid(_app(), [{"partition-id": 0}, {"partition-id": 1}])
    ledger = CommLedger()
    strategy = LedgerFedAvg(ledger=ledger)
    init = ArrayRecord(_model(_ctx()).state_dict())
    before = _app()(_msg("evaluate", init), _ctx()).content["metrics"]
    result = strategy.start(grid=grid, initial_arrays=init, num_rounds=3)
    acc = [float(result.evaluate_metrics_clientapp[r]["eval_acc"]) for r in (1, 2, 3)]  # type: ignore[arg-type]
    assert acc[-1] >= 0.95 > float(before["eval_acc"])  # type: ignore[arg-type]
    # 3 rounds x 2 nodes: one download + one upload per train round, one eval download
    assert ledger.total(stage="finetune", direction="down") == 3 * 2 * MODEL_BYTES
    assert ledger.total(stage="finetune", direction="up") == 3 * 2 * MODEL_BYTES
    assert ledger.total(stage="eval", direction="down") == 3 * 2 * MODEL_BYTES
    assert ledger.total(field="channel_uses") == 0


def test_same_seed_same_weights_other_seed_other_shuffle() -> None:
    init = ArrayRecord(_model(_ctx()).state_dict())

    def trained(seed: int, pid: int) -> torch.Tensor:
        app = _app(seed=seed)
        return (
            app(_msg("train", init), _ctx(pid))
            .content.array_records["arrays"]
            .to_torch_state_dict()["weight"]
        )

    assert torch.equal(trained(3, 0), trained(3, 0))
    assert not torch.equal(trained(3, 0), trained(4, 0))


def test_config_overrides_lr_and_local_epochs() -> None:
    app = _app()
    init = ArrayRecord(_model(_ctx()).state_dict())
    frozen = (
        app(_msg("train", init, lr=0.0), _ctx())
        .content.array_records["arrays"]
        .to_torch_state_dict()
    )
    assert torch.equal(frozen["weight"], init.to_torch_state_dict()["weight"])
    one = app(_msg("train", init), _ctx()).content["metrics"]
    two = app(_msg("train", init, **{"local-epochs": 2}), _ctx()).content["metrics"]
    assert one["num-examples"] == two["num-examples"] == 64
    assert float(two["train_loss"]) < float(one["train_loss"])  # type: ignore[arg-type]


def test_bad_arguments_and_messages_raise() -> None:
    with pytest.raises(ValueError, match="local_epochs"):
        add_fedavg_client(ClientApp(), _model, _data, local_epochs=0)
    with pytest.raises(ValueError, match="batch_size"):
        add_fedavg_client(ClientApp(), _model, _data, batch_size=0)
    with pytest.raises(ValueError, match="arrays"):
        _app()(received(RecordDict({"config": ConfigRecord({})}), "train"), _ctx())


def test_end_to_end_link_draws_channel_noise_from_generator() -> None:
    torch.manual_seed(0)
    tx, rx = nn.Linear(4, 6), nn.Linear(6, 2)
    noiseless = EndToEnd(tx, None, rx)
    x = torch.randn(5, 4)
    assert torch.equal(noiseless(x), rx(tx(x)))
    link = EndToEnd(tx, AWGNChannel(snr_db=0.0), rx)
    a = link(x, generator=torch.Generator().manual_seed(1))
    b = link(x, generator=torch.Generator().manual_seed(1))
    c = link(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(link.state_dict()) == {
        "transmitter.weight",
        "transmitter.bias",
        "receiver.weight",
        "receiver.bias",
    }
    # the transmitter side has split learning's keys: a split-trained device model loads as is
    task = DeviceTask(tx, torch.zeros(3, 4), optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    loaded = link.load_state_dict(task.model.state_dict(), strict=False)
    assert not loaded.unexpected_keys
    assert set(loaded.missing_keys) == {"receiver.weight", "receiver.bias"}


def test_dict_logits_output_is_read_at_its_key() -> None:
    class DictModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.lin(x)}

    app = add_fedavg_client(ClientApp(), lambda _: DictModel(), _data, batch_size=16)
    init = ArrayRecord(DictModel().state_dict())
    ev = app(_msg("evaluate", init), _ctx()).content["metrics"]
    assert ev["num-examples"] == 32 and 0.0 <= float(ev["eval_acc"]) <= 1.0  # type: ignore[arg-type]
    reply = app(_msg("train", init), _ctx())
    assert set(reply.content.array_records["arrays"]) == {"lin.weight", "lin.bias"}
