"""Paper 2's VQ-VAE transceiver, classifier and eq. 7 loss: round trips, gradients, freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flwr_semcom.channels.dmc import DiscreteMemorylessChannel
from flwr_semcom.losses.vqvae import VQVAELoss
from flwr_semcom.models import MODELS
from flwr_semcom.models.classifier import ConvClassifier
from flwr_semcom.models.vqvae import VQVAETransceiver

KEYS = {"z_e", "z_q", "indices", "indices_hat", "z_q_hat", "x_hat"}


@pytest.fixture
def model() -> VQVAETransceiver:
    torch.manual_seed(0)
    return VQVAETransceiver()


def test_forward_dict_shapes_and_registry(model: VQVAETransceiver) -> None:
    x = torch.rand(3, 1, 28, 28)
    out = model(x)
    assert set(out) == KEYS
    assert out["z_e"].shape == (3, 32, 7, 7) == out["z_q"].shape == out["z_q_hat"].shape
    assert out["indices"].shape == (3, 7, 7) and out["indices"].dtype == torch.int64
    assert out["x_hat"].shape == x.shape
    assert torch.equal(out["indices"], out["indices_hat"])  # no channel: error-free
    assert isinstance(MODELS.build("vqvae"), VQVAETransceiver)
    assert isinstance(MODELS.build("slf_classifier", num_classes=20), ConvClassifier)


def test_vq_round_trip_indices_and_codewords(model: VQVAETransceiver) -> None:
    # codewords -> quantize gives their own indices; indices -> codewords gives the rows
    idx = torch.randint(0, model.codebook_size, (2, 7, 7))
    z = model.codewords(idx)
    assert z.shape == (2, model.code_dim, 7, 7)
    assert torch.equal(z[1, :, 3, 4], model.codebook.weight[idx[1, 3, 4]])
    assert torch.equal(model.quantize(z), idx)
    # quantize picks the nearest codeword (brute force check)
    z_e = torch.randn(2, model.code_dim, 7, 7)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, model.code_dim)
    ref = torch.cdist(flat, model.codebook.weight).argmin(1).reshape(2, 7, 7)
    assert torch.equal(model.quantize(z_e), ref)
    # z_q in the forward pass is exactly the looked-up codeword of the sent index
    out = model(torch.rand(2, 1, 28, 28))
    assert torch.equal(out["z_q"], model.codewords(out["indices"]))
    assert torch.allclose(model.decode(out["indices"]), out["x_hat"], atol=1e-6)


def test_channel_flips_indices_and_decoder_sees_received_codewords(
    model: VQVAETransceiver,
) -> None:
    x = torch.rand(4, 1, 28, 28)
    channel = DiscreteMemorylessChannel(model.codebook_size, 1.0)  # always flips
    out = model(x, channel, torch.Generator().manual_seed(0))
    assert not torch.equal(out["indices"], out["indices_hat"])
    assert (out["indices"] != out["indices_hat"]).all()
    assert torch.allclose(out["z_q_hat"], model.codewords(out["indices_hat"]), atol=1e-6)
    assert torch.allclose(out["x_hat"], model.decode(out["indices_hat"]), atol=1e-5)


def test_straight_through_gradient_reaches_encoder(model: VQVAETransceiver) -> None:
    x = torch.rand(2, 1, 28, 28)
    channel = DiscreteMemorylessChannel(model.codebook_size, 0.3)
    out = model(x, channel, torch.Generator().manual_seed(1))
    ((out["x_hat"] - x) ** 2).mean().backward()  # reconstruction term only
    first_conv = model.encoder[0]
    assert isinstance(first_conv, nn.Conv2d)
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    # the decoder input's gradient is copied to z_e unchanged: the codebook gets none from it
    assert model.codebook.weight.grad is None or model.codebook.weight.grad.abs().sum() == 0


def test_layers_in_order_and_parameter_counts(model: VQVAETransceiver) -> None:
    names = [n for n, _ in model.layers()]
    assert names == [
        "encoder.0",
        "encoder.2",
        "encoder.4",
        "codebook",
        "decoder.0",
        "decoder.2",
        "decoder.4",
    ]
    assert [n for n, _ in model.receiver_layers()] == names[3:]
    assert model.max_freeze == 4
    sizes = [sum(p.numel() for p in m.parameters()) for _, m in model.layers()]
    assert sizes == [272, 8224, 1056, 2048, 18496, 90200, 1409]
    # every parameter belongs to exactly one layer
    assert sum(sizes) == sum(p.numel() for p in model.parameters())


def test_freeze_last_counts_from_the_last_layer(model: VQVAETransceiver) -> None:
    expected_unfrozen = [112153, 110744, 20544, 2048, 0]  # cf. paper Table I: 114K 76K 22K 2K 0
    counts = []
    for n in range(5):
        frozen = model.freeze_last(n)
        assert frozen == ["decoder.4", "decoder.2", "decoder.0", "codebook"][:n]
        unfrozen = model.unfrozen_receiver_state_dict()
        counts.append(sum(v.numel() for v in unfrozen.values()))
        # the encoder is always trainable
        assert all(p.requires_grad for p in model.encoder.parameters())
    assert counts == expected_unfrozen
    # freeze_last resets: unfreezing everything again is n=0
    model.freeze_last(0)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("bad", [-1, 5, 7, 2.0, True])
def test_freeze_out_of_range_is_a_clear_error(model: VQVAETransceiver, bad: object) -> None:
    with pytest.raises(ValueError, match=r"freeze_layers \(n\) must be in \[0, 4\]"):
        model.freeze_last(bad)  # type: ignore[arg-type]


def test_frozen_layers_get_no_gradient(model: VQVAETransceiver) -> None:
    model.freeze_last(2)
    x = torch.rand(2, 1, 28, 28)
    out = model(x)
    VQVAELoss()(out, x)["loss"].backward()
    assert model.decoder[4].weight.grad is None and model.decoder[2].weight.grad is None
    assert model.decoder[0].weight.grad is not None
    assert model.codebook.weight.grad is not None and model.codebook.weight.grad.abs().sum() > 0


def test_receiver_state_round_trip_and_errors(model: VQVAETransceiver) -> None:
    torch.manual_seed(1)
    other = VQVAETransceiver()
    state = other.receiver_state_dict()
    assert set(state) == {
        "codebook.weight",
        "decoder.0.weight",
        "decoder.0.bias",
        "decoder.2.weight",
        "decoder.2.bias",
        "decoder.4.weight",
        "decoder.4.bias",
    }
    conv = model.encoder[0]
    assert isinstance(conv, nn.Conv2d)
    enc_before = conv.weight.clone()
    model.load_receiver_state_dict(state)
    assert torch.equal(model.codebook.weight, other.codebook.weight)
    assert torch.equal(conv.weight, enc_before)
    with pytest.raises(ValueError, match="missing"):
        model.load_receiver_state_dict({"codebook.weight": state["codebook.weight"]})
    model.load_receiver_state_dict({"codebook.weight": state["codebook.weight"]}, partial=True)
    with pytest.raises(ValueError, match="not receiver"):
        model.load_receiver_state_dict({"encoder.0.weight": enc_before}, partial=True)
    with pytest.raises(ValueError, match="shape"):
        model.load_receiver_state_dict({"codebook.weight": torch.zeros(3, 3)}, partial=True)


def test_init_codebook_from_data_uses_encoder_outputs(model: VQVAETransceiver) -> None:
    x = torch.rand(8, 1, 28, 28)
    model.init_codebook_from(x, torch.Generator().manual_seed(0))
    flat = model.encoder(x).permute(0, 2, 3, 1).reshape(-1, model.code_dim).detach()
    for row in model.codebook.weight:
        assert (flat - row).abs().sum(1).min() < 1e-5
    assert torch.unique(model.codebook.weight, dim=0).shape[0] == model.codebook_size


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="as many entries"):
        VQVAETransceiver(enc_channels=(16, 32), dec_channels=(64,))
    with pytest.raises(ValueError, match="codebook_size must be >= 2"):
        VQVAETransceiver(codebook_size=1)
    with pytest.raises(ValueError, match="divisible by 4"):
        VQVAETransceiver()(torch.rand(1, 1, 30, 30))


def test_vqvae_loss_matches_hand_computation() -> None:
    torch.manual_seed(3)
    x = torch.rand(2, 1, 4, 4)
    x_hat = torch.rand(2, 1, 4, 4, requires_grad=True)
    z_e = torch.randn(2, 3, 2, 2, requires_grad=True)
    z_q = torch.randn(2, 3, 2, 2, requires_grad=True)
    beta = 0.4
    terms = VQVAELoss(beta)({"x_hat": x_hat, "z_e": z_e, "z_q": z_q}, x)
    recon = sum((a - b) ** 2 for a, b in zip(x_hat.flatten().tolist(), x.flatten().tolist())) / 32
    dist = sum((a - b) ** 2 for a, b in zip(z_e.flatten().tolist(), z_q.flatten().tolist())) / 24
    assert terms["recon"].item() == pytest.approx(recon, rel=1e-6)
    assert terms["codebook"].item() == pytest.approx(dist, rel=1e-6)
    assert terms["commitment"].item() == pytest.approx(dist, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(recon + dist + beta * dist, rel=1e-6)
    # stop-gradients: the codebook term moves only z_q, the commitment term only z_e
    terms["codebook"].backward(retain_graph=True)
    assert z_e.grad is None and z_q.grad is not None
    z_q.grad = None
    terms["commitment"].backward()
    assert z_q.grad is None and z_e.grad is not None
    assert torch.allclose(z_e.grad, 2 * (z_e - z_q).detach() / 24)


def test_vqvae_loss_validation() -> None:
    with pytest.raises(ValueError, match="beta"):
        VQVAELoss(-1.0)
    with pytest.raises(KeyError, match="z_q"):
        VQVAELoss()({"x_hat": torch.zeros(1), "z_e": torch.zeros(1)}, torch.zeros(1))


def test_classifier_logits_and_freezing() -> None:
    clf = ConvClassifier(num_classes=20, channels=(8, 16), hidden=32)
    out = clf(torch.rand(5, 1, 28, 28))
    assert set(out) == {"logits"} and out["logits"].shape == (5, 20)
    convs = [m for m in clf.features if isinstance(m, nn.Conv2d)]
    pools = [m for m in clf.features if isinstance(m, nn.MaxPool2d)]
    assert len(convs) == len(pools) == 2  # a max-pool after every convolution
    for p in clf.parameters():
        p.requires_grad_(False)
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    clf(x)["logits"].sum().backward()
    assert x.grad is not None and all(p.grad is None for p in clf.parameters())
    with pytest.raises(ValueError, match="divisible"):
        ConvClassifier(image_size=28, channels=(4, 4, 4))
