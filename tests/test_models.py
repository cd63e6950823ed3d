"""Tests for paper 1's models: encoders, projector, JSCC head, transmitter, server decoder."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from flwr_semcom.models import MODELS
from flwr_semcom.models.decoder import ServerDecoder
from flwr_semcom.models.encoders import (
    ConvEncoder,
    Projector,
    ResNetEncoder,
    build_encoder,
)
from flwr_semcom.models.jscc import JSCCHead, bandwidth_ratio
from flwr_semcom.models.transmitter import DeviceTransmitter, build_transmitter
from flwr_semcom.models.utils import (
    count_parameters,
    freeze,
    parameter_nbytes,
    unfreeze,
)

CHANNELS = {"rgb": 3, "depth": 1}

# torchvision resnet18: 11,689,512 parameters, of which fc (512*1000 + 1000) = 513,000 and the
# 7x7 RGB stem 7*7*3*64 = 9,408.
RESNET18_BODY = 11_689_512 - 513_000 - 9_408  # everything but fc and conv1: 11,167,104


def _layer4_hw(encoder: ResNetEncoder, x: torch.Tensor) -> tuple[int, int]:
    shapes: list[tuple[int, ...]] = []
    handle = encoder.net.layer4.register_forward_hook(
        lambda _m, _i, out: shapes.append(tuple(out.shape))
    )
    with torch.no_grad():
        encoder(x)
    handle.remove()
    return shapes[0][2], shapes[0][3]


# ---------------------------------------------------------------- encoders


@pytest.mark.parametrize("modality", ["rgb", "depth"])
@pytest.mark.parametrize(("size", "layer4_hw"), [(32, 4), (64, 8), (224, 7)])
def test_resnet_encoder_shapes(modality: str, size: int, layer4_hw: int) -> None:
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", CHANNELS[modality], size).eval()
    x = torch.randn(2, CHANNELS[modality], size, size)
    with torch.no_grad():
        f = encoder(x)
    assert f.shape == (2, 512)
    assert encoder.feature_dim == 512
    assert torch.isfinite(f).all()
    # small stem keeps 32 px -> 4x4 (64 px -> 8x8) at layer4; the ImageNet stem gives 224/32 = 7
    assert isinstance(encoder, ResNetEncoder)
    assert _layer4_hw(encoder, x) == (layer4_hw, layer4_hw)


@pytest.mark.parametrize(("size", "small"), [(28, True), (64, True), (65, False), (224, False)])
def test_stem_choice_by_image_size(size: int, small: bool) -> None:
    encoder = build_encoder("resnet18", 1, size)
    assert isinstance(encoder, ResNetEncoder)
    assert encoder.small_input is small
    conv1 = encoder.net.conv1
    assert conv1.in_channels == 1 and conv1.out_channels == 64
    if small:
        assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
        assert isinstance(encoder.net.maxpool, nn.Identity)
    else:
        assert conv1.kernel_size == (7, 7) and conv1.stride == (2, 2)
        assert isinstance(encoder.net.maxpool, nn.MaxPool2d)
    cnn = build_encoder("small_cnn", 3, size)
    assert isinstance(cnn, ConvEncoder) and cnn.small_input is small


@pytest.mark.parametrize(
    ("in_channels", "small", "expected"),
    [
        (3, False, 11_176_512),  # torchvision resnet18 minus fc
        (3, True, RESNET18_BODY + 3 * 3 * 3 * 64),  # 11,168,832
        (1, True, RESNET18_BODY + 3 * 3 * 1 * 64),  # 11,167,680
        (1, False, RESNET18_BODY + 7 * 7 * 1 * 64),  # 11,170,240
    ],
)
def test_resnet_parameter_count(in_channels: int, small: bool, expected: int) -> None:
    reference = resnet18(weights=None)
    assert count_parameters(reference) - count_parameters(reference.fc) == 11_176_512
    assert count_parameters(ResNetEncoder(in_channels, small_input=small)) == expected


def test_resnet_fc_removed_and_init_matches_torchvision() -> None:
    encoder = ResNetEncoder(3, small_input=False)
    assert isinstance(encoder.net.fc, nn.Identity)
    # same seed -> same weights as torchvision's resnet18 (body and 7x7 stem unchanged)
    torch.manual_seed(5)
    a = ResNetEncoder(3, small_input=False)
    torch.manual_seed(5)
    b = resnet18(weights=None)
    ref = {k: v for k, v in b.state_dict().items() if not k.startswith("fc.")}
    assert set(a.net.state_dict()) == set(ref)
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_small_stem_uses_resnet_init() -> None:
    torch.manual_seed(0)
    w = ResNetEncoder(1, small_input=True).net.conv1.weight
    # kaiming normal, fan_out = 64 * 3 * 3 -> std = sqrt(2 / 576)
    assert w.shape == (64, 1, 3, 3)
    assert abs(w.std().item() - (2 / 576) ** 0.5) < 0.15 * (2 / 576) ** 0.5


@pytest.mark.parametrize("size", [32, 224])
def test_conv_encoder_shapes_and_params(size: int) -> None:
    encoder = build_encoder("small_cnn", 1, size, widths=(8, 16, 32)).eval()
    with torch.no_grad():
        f = encoder(torch.randn(2, 1, size, size))
    assert f.shape == (2, 32) and encoder.feature_dim == 32
    stem_k = 3 if size <= 64 else 7
    # convs (no bias) + BN (weight and bias) per stage
    expected = stem_k**2 * 1 * 8 + 2 * 8 + 9 * 8 * 16 + 2 * 16 + 9 * 16 * 32 + 2 * 32
    assert count_parameters(encoder) == expected
    assert count_parameters(ConvEncoder(3)) == 388_896  # default widths, documented


def test_wrong_channel_count_raises() -> None:
    with pytest.raises(ValueError, match=r"expected input with 3 channels, got 1"):
        ResNetEncoder(3)(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"expected input with 1 channels, got 3"):
        ConvEncoder(1)(torch.randn(2, 3, 32, 32))
    rgb = build_transmitter("rgb", "small_cnn", 32, num_symbols=4)
    with pytest.raises(ValueError, match=r"expected input with 3 channels \(rgb\), got 1"):
        rgb(torch.randn(2, 1, 32, 32))
    depth = build_transmitter("depth", "small_cnn", 32, num_symbols=4)
    with pytest.raises(ValueError, match=r"expected input with 1 channels \(depth\), got 3"):
        depth(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"image batch \[B, 3, H, W\]"):
        ResNetEncoder(3)(torch.randn(3, 32, 32))


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ResNetEncoder(0), r"in_channels must be a positive int \(>= 1\), got 0"),
        (lambda: ResNetEncoder(True), r"in_channels must be a positive int"),
        (lambda: ConvEncoder(3, widths=()), r"widths must hold at least one"),
        (lambda: ConvEncoder(3, widths=(8, 0)), r"widths entries must be a positive int"),
        (lambda: build_encoder("vit", 3, 32), r"unknown encoder 'vit'; valid names: resnet18"),
        (lambda: build_encoder("resnet18", 3, 0), r"image_size must be a positive int"),
        (lambda: Projector(0, [8]), r"in_dim must be a positive int"),
        (lambda: Projector(8, []), r"widths must hold at least one"),
        (lambda: Projector(8, [8, -1]), r"widths entries must be a positive int"),
        (lambda: JSCCHead(512, 0), r"num_symbols must be a positive int \(>= 1\), got 0"),
        (lambda: ServerDecoder(16, 1), r"num_classes must be an int >= 2, got 1"),
        (lambda: ServerDecoder(16, 10, hidden=0), r"hidden must be a positive int"),
        (lambda: build_transmitter("ir", "small_cnn", 32, 4), r"modality must be one of rgb"),
    ],
)
def test_invalid_constructor_args(factory: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


def test_registry_names() -> None:
    for name in ("resnet18", "small_cnn", "server_decoder"):
        assert name in MODELS
    encoder = MODELS.build("resnet18", in_channels=1, small_input=True)
    assert isinstance(encoder, ResNetEncoder) and encoder.in_channels == 1


# ---------------------------------------------------------------- projector


def test_projector_structure_and_shapes() -> None:
    proj = Projector(16, [32, 24, 8])
    kinds = [type(m) for m in proj.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert all(m.bias is None for m in proj.net if isinstance(m, nn.Linear))
    assert proj.out_dim == 8
    out = proj(torch.randn(5, 16))
    assert out.shape == (5, 8)
    # last layer is a plain Linear: outputs can be negative (no ReLU)
    assert (out < 0).any()
    assert count_parameters(proj) == 16 * 32 + 32 * 24 + 24 * 8 + 2 * (32 + 24)
    single = Projector(16, [4])
    assert [type(m) for m in single.net] == [nn.Linear]
    with pytest.raises(ValueError, match=r"expected features \[B, 16\]"):
        proj(torch.randn(5, 15))


def test_decur_projector_constructible() -> None:
    with torch.device("meta"):  # no memory: 138M parameters would take 554 MB
        proj = Projector(512, [8192, 8192, 8192])
        out = proj(torch.empty(64, 512))
    assert out.shape == (64, 8192)
    assert count_parameters(proj) == 512 * 8192 + 2 * 8192 * 8192 + 2 * 2 * 8192  # 138,444,800


# ---------------------------------------------------------------- JSCC head


def test_jscc_head_layout_and_params() -> None:
    head = JSCCHead(512, num_symbols=64)
    z = head(torch.randn(3, 512))
    assert z.shape == (3, 128) and head.out_dim == 128
    assert count_parameters(head) == 512 * 128 + 128
    zc = JSCCHead.to_complex(z)
    assert zc.shape == (3, 64) and zc.is_complex()
    assert torch.equal(zc.real, z[:, :64]) and torch.equal(zc.imag, z[:, 64:])
    with pytest.raises(ValueError, match=r"expected features \[B, 512\]"):
        head(torch.randn(3, 256))


def test_bandwidth_ratio_hand_computed() -> None:
    assert bandwidth_ratio(256, (3, 32, 32)) == pytest.approx(1 / 12)  # 256 / 3072
    assert bandwidth_ratio(64, (1, 224, 224)) == pytest.approx(64 / 50_176)
    assert bandwidth_ratio(49, (1, 28, 28)) == pytest.approx(1 / 16)
    with pytest.raises(ValueError, match=r"input_shape must be one sample's \(C, H, W\)"):
        bandwidth_ratio(8, (2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"num_symbols must be a positive int"):
        bandwidth_ratio(0, (3, 32, 32))
    with pytest.raises(ValueError, match=r"input_shape entries must be a positive int"):
        bandwidth_ratio(8, (3, 0, 32))


# ---------------------------------------------------------------- transmitter


@pytest.mark.parametrize("modality", ["rgb", "depth"])
def test_transmitter_outputs(modality: str) -> None:
    torch.manual_seed(0)
    tx = build_transmitter(modality, "resnet18", 32, num_symbols=16, projector_widths=[64, 32])
    tx.eval()
    x = torch.randn(2, CHANNELS[modality], 32, 32)
    with torch.no_grad():
        out = tx(x)
        features = tx.encoder(x)
    assert set(out) == {"features", "z", "p"}
    assert out["features"].shape == (2, 512)
    assert out["z"].shape == (2, 32)
    assert out["p"].shape == (2, 32)
    assert torch.equal(out["features"], features)
    assert torch.allclose(out["z"], tx.head(features))
    plain = build_transmitter(modality, "small_cnn", 32, num_symbols=8)
    assert set(plain(torch.randn(2, CHANNELS[modality], 32, 32))) == {"features", "z"}


def test_transmitter_checks_dimensions() -> None:
    encoder = ConvEncoder(3, widths=(8, 16))
    with pytest.raises(ValueError, match=r"head.in_dim must equal encoder.feature_dim \(16\)"):
        DeviceTransmitter(encoder, JSCCHead(32, 4))
    with pytest.raises(ValueError, match=r"projector.in_dim must equal encoder.feature_dim"):
        DeviceTransmitter(encoder, JSCCHead(16, 4), Projector(8, [4]))
    with pytest.raises(ValueError, match=r"encoder must have int attributes feature_dim"):
        DeviceTransmitter(nn.Linear(3, 3), JSCCHead(16, 4))


def test_same_seed_same_init() -> None:
    def build() -> DeviceTransmitter:
        return build_transmitter("rgb", "resnet18", 32, num_symbols=8, projector_widths=[16, 8])

    torch.manual_seed(123)
    a = build().state_dict()
    torch.manual_seed(123)
    b = build().state_dict()
    torch.manual_seed(124)
    c = build().state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.net.conv1.weight"], c["encoder.net.conv1.weight"])
    assert not torch.equal(a["head.linear.weight"], c["head.linear.weight"])


# ---------------------------------------------------------------- server decoder


def test_decoder_on_two_modalities() -> None:
    torch.manual_seed(0)
    rgb = build_transmitter("rgb", "small_cnn", 32, num_symbols=8, encoder_kwargs={"widths": (8,)})
    depth = build_transmitter("depth", "small_cnn", 32, 4, encoder_kwargs={"widths": (8,)})
    decoder = ServerDecoder(in_dim=2 * 8 + 2 * 4, num_classes=10, hidden=32)
    z_rgb = rgb(torch.randn(6, 3, 32, 32))["z"]
    z_depth = depth(torch.randn(6, 1, 32, 32))["z"]
    # the server receives the (noisy) features; make them leaves as in split learning
    z_hat = [z_rgb.detach().requires_grad_(), z_depth.detach().requires_grad_()]
    logits = decoder(z_hat)["logits"]
    assert logits.shape == (6, 10)
    assert torch.equal(logits, decoder(torch.cat(z_hat, dim=1))["logits"])
    nn.functional.cross_entropy(logits, torch.arange(6) % 10).backward()
    # gradients w.r.t. each received feature come back with the sender's shape
    assert z_hat[0].grad is not None and z_hat[0].grad.shape == (6, 16)
    assert z_hat[1].grad is not None and z_hat[1].grad.shape == (6, 8)
    assert z_hat[0].grad.abs().sum() > 0 and z_hat[1].grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"expected received features \[B, 24\]"):
        decoder([z_rgb])


def test_decoder_parameter_counts() -> None:
    assert count_parameters(ServerDecoder(1024, 10, hidden=256)) == 1025 * 256 + 257 * 10
    linear = ServerDecoder(1024, 10)
    assert isinstance(linear.net, nn.Linear)
    assert count_parameters(linear) == 1025 * 10


# ---------------------------------------------------------------- utils


def test_freeze_and_byte_counts() -> None:
    tx = build_transmitter("depth", "small_cnn", 32, num_symbols=4, encoder_kwargs={"widths": (8,)})
    total = count_parameters(tx)
    head = 8 * 8 + 8
    assert total == 9 * 8 + 2 * 8 + head
    assert parameter_nbytes(tx) == 4 * total
    freeze(tx.encoder)
    assert count_parameters(tx, trainable_only=True) == head
    assert parameter_nbytes(tx, trainable_only=True) == 4 * head
    unfreeze(tx)
    assert count_parameters(tx, trainable_only=True) == total


# ---------------------------------------------------------------- docs


def test_docs_example_runs() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/models.md has no python example"
    for block in blocks:
        exec(compile(block, "docs/models.md", "exec"), {})
