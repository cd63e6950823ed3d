"""SLF with a user's own transceiver: the generic device side (`flwr_semcom.alignment`).

A small analog transceiver (not our VQ-VAE: conv encoder → additive-noise channel → two
decoder layers) with ordered freezable layers, synthetic images, and an `SLFDevice` built
from plain typed pieces; the handlers run behind :class:`InProcessGrid`. No config tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from torch import Tensor, nn

from flwr_semcom.accounting import CommLedger
from flwr_semcom.alignment import (
    MODEL_KEY,
    FinetuneSchedule,
    FreezableLayers,
    FreezableTransceiver,
    NodeSetup,
    RecoveryModel,
    SLFDevice,
    add_slf_client,
)
from flwr_semcom.alignment.transceiver import (
    check_freeze,
    load_receiver_state,
    receiver_state,
    unfrozen_receiver_state,
)
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.models.vqvae import VQVAETransceiver
from strategies.fedavg_alignment import FedAvgAlignment
from strategies.slf import Link, SLFStrategy

RECOVERY = RecoveryModel(dl_mbps=8.0, ul_mbps=4.0, device_tflops=1.0)


class NoisyLink(nn.Module):
    """The user's own channel: additive Gaussian noise of standard deviation ``sigma``."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(y.shape, generator=generator, device=y.device)
        return y + self.sigma * noise


class TinyTransceiver(FreezableLayers, nn.Module):
    """encoder (conv) → channel → dec0 (conv) → dec1 (conv): three layers, two at the receiver."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, padding=1)
        self.dec0 = nn.Conv2d(4, 8, 3, padding=1)
        self.dec1 = nn.Conv2d(8, 1, 3, padding=1)

    def layers(self) -> list[tuple[str, nn.Module]]:
        return [("enc", self.enc), ("dec0", self.dec0), ("dec1", self.dec1)]

    def receiver_layers(self) -> list[tuple[str, nn.Module]]:
        return self.layers()[1:]

    def encode(self, x: Tensor) -> Tensor:
        return torch.tanh(self.enc(x))

    def decode(self, y: Tensor) -> Tensor:
        return self.dec1(F.relu(self.dec0(y)))

    def forward(
        self, x: Tensor, channel: nn.Module | None = None, generator: Any = None
    ) -> dict[str, Tensor]:
        y = self.encode(x)
        y_hat = y if channel is None else channel(y, generator=generator)
        return {"y": y, "y_hat": y_hat, "x_hat": self.decode(y_hat)}


def mse_loss(out: Mapping[str, Tensor], x: Tensor) -> dict[str, Tensor]:
    return {"loss": F.mse_loss(out["x_hat"], x)}


IMAGES = {
    "a": torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(1)),
    "b": torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(2)) ** 2,
}
INITIAL_SEEDS = {"tx": 10, "rx": 20}
scored: list[dict[str, Any]] = []


def _initial(name: str) -> dict[str, Tensor]:
    torch.manual_seed(INITIAL_SEEDS[name])
    return TinyTransceiver().state_dict()


def _score(model: FreezableTransceiver, received: Tensor, params: Mapping[str, Any]) -> dict:
    scored.append(dict(params))
    images = IMAGES[str(params["source"])][:8]
    with torch.no_grad():
        return {"mse": float(((model.decode(received) - images) ** 2).mean()), "accuracy": 0.5}


DEVICE = SLFDevice(
    transceiver_fn=TinyTransceiver,
    setup_fn=lambda role, p: NodeSetup(
        state=_initial(str(p[role])),
        data={"source": "a" if role == "transmitter" else "b", "epsilon": 0.0},
        metrics={"from-cache": 0},
    ),
    data_fn=lambda p, part: IMAGES[str(p["source"])][: 16 if part == "train" else 8],
    score_fn=_score,
    channel_fn=lambda model, sigma: NoisyLink(sigma),
    loss=mse_loss,
    batch_size=8,
    finetune=FinetuneSchedule(steps=3, lr=1e-2, reinit_steps=4, reinit_lr=1e-2),
    fedavg_steps=2,
    fedavg_lr=1e-2,
)


def _device_fn(context: Context) -> SLFDevice:
    return DEVICE


@pytest.fixture
def grid() -> InProcessGrid:
    app = add_slf_client(ClientApp(), _device_fn)
    g = InProcessGrid(app, [{"partition-id": 0}, {"partition-id": 1}])
    for node in sorted(g.get_node_ids()):
        config = ConfigRecord({"transmitter": "tx", "receiver": "rx"})
        msg = Message(RecordDict({"config": config}), node, "train.slf_setup")
        (reply,) = g.send_and_receive([msg])
        assert not reply.has_error(), reply.error.reason
    return g


def _state(grid: InProcessGrid, node: int) -> dict[str, Tensor]:
    return dict(grid.contexts[node].state.array_records[MODEL_KEY].to_torch_state_dict())


def _link(tag: str = "") -> Link:
    return Link(1000, 1001, crossover=0.1, source="a", epsilon=0.0, eval_seed=3, tag=tag)


def test_user_transceiver_slf_freezes_and_uploads_only_the_unfrozen(grid: InProcessGrid) -> None:
    scored.clear()
    ledger = CommLedger()
    before_i, before_j = _state(grid, 1000), _state(grid, 1001)
    assert torch.equal(before_i["enc.weight"], _initial("tx")["enc.weight"])  # setup by role
    assert torch.equal(before_j["enc.weight"], _initial("rx")["enc.weight"])
    res = SLFStrategy(1, RECOVERY, ledger=ledger, seed=5).start(grid, _link("u"))
    after_i, after_j = _state(grid, 1000), _state(grid, 1001)

    dec0 = 8 * 4 * 9 + 8
    assert res.unfrozen_params == dec0 and res.upload_bytes == 4 * dec0
    assert res.download_bytes == 4 * (dec0 + 1 * 8 * 9 + 1)  # dec0 + dec1 of j
    for key in ("dec1.weight", "dec1.bias"):  # frozen (n = 1): j's original at both ends
        assert torch.equal(after_i[key], before_j[key]) and torch.equal(after_j[key], before_j[key])
    for key in ("dec0.weight", "dec0.bias"):  # fine-tuned at i, installed at j
        assert torch.equal(after_i[key], after_j[key]) and not torch.equal(
            after_j[key], before_j[key]
        )
    assert torch.equal(after_j["enc.weight"], before_j["enc.weight"])  # j's own encoder untouched
    assert not torch.equal(after_i["enc.weight"], before_i["enc.weight"])  # ENC_i trained
    # step 4: 8 test images x 4 x 8 x 8 analog channel uses at the default 32 bits each
    uses = 8 * 4 * 8 * 8
    assert ledger.total(field="channel_uses", stage="eval") == uses == res.num_examples * 256
    assert ledger.total(stage="eval") == uses * 4
    assert scored == [{"source": "a", "epsilon": 0.0, "part": "test"}]  # sender data, test part
    assert res.recovery_time_s == pytest.approx(RECOVERY.slf(res.download_bytes, res.flops,
                                                              res.upload_bytes))  # fmt: skip
    assert res.flops > 0


def test_user_transceiver_reinit_and_range(grid: InProcessGrid) -> None:
    res = SLFStrategy(0, RECOVERY, seed=5).start(grid, _link())
    assert res.unfrozen_params == 8 * 4 * 9 + 8 + 8 * 9 + 1  # n = 0: the whole receiver part
    with pytest.raises(RuntimeError, match=r"freeze_layers \(n\) must be in \[0, 2\].*got 3"):
        SLFStrategy(3, RECOVERY).start(grid, _link())


def test_user_transceiver_fedavg_alignment(grid: InProcessGrid) -> None:
    ledger = CommLedger()
    out = FedAvgAlignment(_link("fa"), RECOVERY, ledger=ledger).run(grid, rounds=2)
    model_bytes = 4 * sum(v.numel() for v in TinyTransceiver().state_dict().values())
    assert out.upload_bytes == out.download_bytes == 6 * model_bytes
    si, sj = _state(grid, 1000), _state(grid, 1001)
    assert all(torch.equal(si[k], sj[k]) for k in si)  # one global model at both nodes


def test_generic_receiver_state_matches_the_vqvae_methods() -> None:
    torch.manual_seed(0)
    model = VQVAETransceiver()
    ours, theirs = receiver_state(model), model.receiver_state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    for n in range(model.max_freeze + 1):
        model.freeze_last(n)
        up, ref = unfrozen_receiver_state(model), model.unfrozen_receiver_state_dict()
        assert list(up) == list(ref) and check_freeze(model, n) == n
    with pytest.raises(ValueError, match=r"must be in \[0, 4\].*got 5"):
        check_freeze(model, 5)
    with pytest.raises(ValueError, match="not receiver-part tensors: encoder.0.weight"):
        load_receiver_state(model, {"encoder.0.weight": torch.zeros(16, 1, 4, 4)})
    with pytest.raises(ValueError, match="codebook.weight: shape"):
        load_receiver_state(model, {"codebook.weight": torch.zeros(3, 3)}, partial=True)


def test_freezable_layers_mixin_freezes_from_the_last_layer() -> None:
    model = TinyTransceiver()
    assert isinstance(model, FreezableTransceiver)
    assert model.freeze_last(2) == ["dec1", "dec0"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["enc.weight", "enc.bias"]
    assert model.freeze_last(0) == [] and all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        model.freeze_last(3)
