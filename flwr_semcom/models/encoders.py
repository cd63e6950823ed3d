"""Modality encoders f^m(x^m; α^m) and the self-supervised projector.

Paper 1 (Zhao et al., "Multi-modal self-supervised semantic communication", arXiv 2503.13940),
Sec. II eq. 1: each edge device m maps its modality x^m (RGB: 3 channels, depth: 1 channel) to
features z^m with a ResNet-18 (Sec. IV-A). :class:`ResNetEncoder` is torchvision's
``resnet18(weights=None)`` with ``fc`` removed (512-d output) and a configurable first
convolution; for images of at most 64 px it uses the CIFAR ResNet stem (3×3 conv, stride 1, no
max-pool) so that 32 px inputs are not reduced to 1×1 before ``layer4``.

:class:`ConvEncoder` (registered as ``"small_cnn"``) is our small stand-in for simulations with
many clients on a few CPU cores; it is not in the paper.

:class:`Projector` is the Barlow Twins / DeCUR projector used in Stage I (Sec. III-A, eq. 7-15):
``Linear-BN-ReLU`` for every layer but the last, then a plain ``Linear`` (all without bias, as
in the official Barlow Twins and DeCUR code; DeCUR uses widths 8192-8192-8192).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import resnet18

from flwr_semcom.models import MODELS
from flwr_semcom.models.utils import check_image_batch, check_positive_int, check_widths

__all__ = [
    "ENCODER_NAMES",
    "SMALL_INPUT_MAX_SIZE",
    "ConvEncoder",
    "Projector",
    "ResNetEncoder",
    "build_encoder",
]

#: Largest image side (pixels) for which :func:`build_encoder` picks the small-image stem.
SMALL_INPUT_MAX_SIZE = 64

#: Names accepted by :func:`build_encoder` (all registered in ``MODELS``).
ENCODER_NAMES = ("resnet18", "small_cnn")


def _init_conv(conv: nn.Conv2d) -> None:
    """torchvision's ResNet initialisation for a (replaced) convolution."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


@MODELS.register("resnet18")
class ResNetEncoder(nn.Module):
    """ResNet-18 feature extractor with configurable input channels (paper 1, eq. 1).

    Parameters
    ----------
    in_channels
        Input channels: 3 for RGB, 1 for depth (any positive int is accepted).
    small_input
        ``True``: CIFAR stem (``Conv2d(in_channels, 64, 3, stride=1, padding=1)``, no max-pool),
        meant for images of at most 64 px. ``False``: ImageNet stem (7×7 conv, stride 2, then
        3×3 max-pool, stride 2), meant for 224 px as in the paper.

    Attributes
    ----------
    feature_dim : int
        512, the size of the output features.
    in_channels : int
        The expected number of input channels.

    Notes
    -----
    ``forward(x)`` takes ``[B, in_channels, H, W]`` and returns ``[B, 512]`` (global average
    pool after ``layer4``). Parameters: 11,176,512 − 9,408 + (k² · in_channels · 64) with k = 3
    (small stem) or 7, e.g. 11,168,832 for RGB at 32 px and 11,167,680 for depth at 32 px.
    """

    feature_dim: int
    in_channels: int

    def __init__(self, in_channels: int = 3, small_input: bool = True) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        self.in_channels = in_channels
        self.small_input = bool(small_input)
        net = resnet18(weights=None)
        if self.small_input:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()  # type: ignore[assignment]
            _init_conv(net.conv1)
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            _init_conv(net.conv1)
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()  # type: ignore[assignment]
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[B, 512]`` of an image batch ``[B, in_channels, H, W]``."""
        check_image_batch(x, self.in_channels)
        out: torch.Tensor = self.net(x)
        return out


@MODELS.register("small_cnn")
class ConvEncoder(nn.Module):
    """A small CNN encoder for fast simulations (ours, not in the papers).

    A stem ``Conv-BN-ReLU`` at ``widths[0]`` channels, then one stride-2 ``Conv3×3-BN-ReLU``
    per further width, then a global average pool.

    Parameters
    ----------
    in_channels
        Input channels: 3 for RGB, 1 for depth (any positive int).
    small_input
        ``True``: 3×3 stride-1 stem (images ≤ 64 px); ``False``: 7×7 stride-2 stem followed by
        a 3×3 stride-2 max-pool, as in ResNet (224 px images).
    widths
        Channels per stage (at least one, each ≥ 1); ``feature_dim = widths[-1]``.

    Notes
    -----
    With the default widths (32, 64, 128, 256) and RGB input the encoder has 388,896
    parameters (about 1/29 of ResNet-18).
    """

    feature_dim: int
    in_channels: int

    def __init__(
        self,
        in_channels: int = 3,
        small_input: bool = True,
        widths: Sequence[int] = (32, 64, 128, 256),
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        widths = check_widths(widths)
        self.in_channels = in_channels
        self.small_input = bool(small_input)
        self.widths = widths
        self.feature_dim = widths[-1]
        layers: list[nn.Module]
        if self.small_input:
            layers = [nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)]
        else:
            layers = [nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)]
        layers += [nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        if not self.small_input:
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _init_conv(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[B, widths[-1]]`` of an image batch ``[B, in_channels, H, W]``."""
        check_image_batch(x, self.in_channels)
        out: torch.Tensor = self.net(x)
        return out


def build_encoder(
    name: str, in_channels: int, image_size: int, **kwargs: object
) -> ResNetEncoder | ConvEncoder:
    """Build the encoder ``name`` with the stem that suits ``image_size``.

    Parameters
    ----------
    name
        One of :data:`ENCODER_NAMES` (``"resnet18"``, ``"small_cnn"``).
    in_channels
        Input channels (3 RGB, 1 depth).
    image_size
        Side of the (square) input images in pixels; ``<= 64`` selects the small-image stem.
    **kwargs
        Further constructor arguments (e.g. ``widths`` for ``"small_cnn"``).

    Returns
    -------
    ResNetEncoder | ConvEncoder
        The encoder; its ``feature_dim`` gives the output size.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or a non-positive size.
    """
    if name not in ENCODER_NAMES:
        raise ValueError(f"unknown encoder {name!r}; valid names: {', '.join(ENCODER_NAMES)}")
    check_positive_int("image_size", image_size)
    encoder = MODELS.build(
        name, in_channels=in_channels, small_input=image_size <= SMALL_INPUT_MAX_SIZE, **kwargs
    )
    if not isinstance(encoder, ResNetEncoder | ConvEncoder):  # pragma: no cover - registry misuse
        raise TypeError(f"MODELS entry {name!r} is not an encoder: {type(encoder).__name__}")
    return encoder


class Projector(nn.Module):
    """Barlow Twins / DeCUR projector: ``(Linear-BN-ReLU) × (n−1)``, then ``Linear``.

    Paper 1, Stage I (Sec. III-A): the self-supervised losses (eq. 10, 12-14) are computed on
    projector outputs, as in DeCUR (Wang et al., arXiv 2309.05300), whose RGB-D setting uses
    ``widths = (8192, 8192, 8192)``.

    Parameters
    ----------
    in_dim
        Input features (the encoder's ``feature_dim``), ≥ 1.
    widths
        Output size of each Linear layer (at least one entry, each ≥ 1); the last is the
        projection size. Linear layers have no bias (official Barlow Twins / DeCUR code).

    Notes
    -----
    ``forward`` maps ``[B, in_dim]`` to ``[B, widths[-1]]``. In training mode batch norm
    needs ``B ≥ 2``. Parameters: ``Σ d_{i-1} d_i + 2 Σ_{i<n} d_i`` with ``d_0 = in_dim``; the
    DeCUR projector on 512-d ResNet-18 features has 138,444,800.
    """

    def __init__(self, in_dim: int, widths: Sequence[int]) -> None:
        super().__init__()
        check_positive_int("in_dim", in_dim)
        widths = check_widths(widths)
        self.in_dim = in_dim
        self.widths = widths
        self.out_dim = widths[-1]
        dims = (in_dim, *widths)
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers += [
                nn.Linear(dims[i], dims[i + 1], bias=False),
                nn.BatchNorm1d(dims[i + 1]),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project features ``[B, in_dim]`` to ``[B, widths[-1]]``."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected features [B, {self.in_dim}], got shape {tuple(x.shape)}")
        out: torch.Tensor = self.net(x)
        return out
