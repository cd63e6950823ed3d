"""Device-side transmitter: modality encoder f^m, JSCC head and optional SSL projector.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. II eq. 1: device m computes
z^m = f^m(x^m; α^m) and sends it over the channel (eq. 2). Here f^m is split into an
encoder (:mod:`flwr_semcom.models.encoders`) giving ``features`` and a
:class:`~flwr_semcom.models.jscc.JSCCHead` giving the channel input ``z`` (``[B, 2k]`` reals =
``k`` complex symbols). The channel is applied by the caller (client side), so the same
transmitter serves every channel. In Stage I (Sec. III-A) the self-supervised losses read the
projector output ``p = projector(features)`` when a projector is attached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flwr_semcom.models.encoders import Projector, build_encoder
from flwr_semcom.models.jscc import JSCCHead
from flwr_semcom.models.utils import check_image_batch

__all__ = ["MODALITY_CHANNELS", "DeviceTransmitter", "build_transmitter"]

#: Input channels of each modality of paper 1 (NYU Depth V2: RGB and depth).
MODALITY_CHANNELS: dict[str, int] = {"rgb": 3, "depth": 1}


class DeviceTransmitter(nn.Module):
    """Encoder + JSCC head (+ projector) of one edge device.

    Parameters
    ----------
    encoder
        An image encoder with attributes ``feature_dim`` and ``in_channels``
        (:class:`~flwr_semcom.models.encoders.ResNetEncoder` or ``ConvEncoder``).
    head
        The JSCC head; ``head.in_dim`` must equal ``encoder.feature_dim``.
    projector
        Optional Stage-I projector; ``projector.in_dim`` must equal ``encoder.feature_dim``.
    modality
        Optional modality name (``"rgb"``, ``"depth"``) used in error messages.

    Notes
    -----
    ``forward(x)`` returns ``{"features": [B, F], "z": [B, 2k]}`` plus ``"p": [B, P]`` when a
    projector is attached. No channel is applied.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: JSCCHead,
        projector: Projector | None = None,
        modality: str | None = None,
    ) -> None:
        super().__init__()
        feature_dim = getattr(encoder, "feature_dim", None)
        in_channels = getattr(encoder, "in_channels", None)
        if not isinstance(feature_dim, int) or not isinstance(in_channels, int):
            raise ValueError(
                "encoder must have int attributes feature_dim and in_channels, got "
                f"{type(encoder).__name__}"
            )
        if head.in_dim != feature_dim:
            raise ValueError(
                f"head.in_dim must equal encoder.feature_dim ({feature_dim}), got {head.in_dim}"
            )
        if projector is not None and projector.in_dim != feature_dim:
            raise ValueError(
                f"projector.in_dim must equal encoder.feature_dim ({feature_dim}), "
                f"got {projector.in_dim}"
            )
        self.encoder = encoder
        self.head = head
        self.projector = projector
        self.modality = modality
        self.in_channels = in_channels
        self.feature_dim = feature_dim
        self.num_symbols = head.num_symbols

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode an image batch ``[B, C, H, W]`` into features and channel input.

        Returns
        -------
        dict[str, torch.Tensor]
            ``"features"`` ``[B, feature_dim]``, ``"z"`` ``[B, 2k]`` (real parts then
            imaginary parts) and, with a projector, ``"p"`` ``[B, projector.out_dim]``.

        Raises
        ------
        ValueError
            ``"expected input with 3 channels (rgb), got 1"`` for a wrong channel count.
        """
        check_image_batch(x, self.in_channels, self.modality)
        features: torch.Tensor = self.encoder(x)
        out = {"features": features, "z": self.head(features)}
        if self.projector is not None:
            out["p"] = self.projector(features)
        return out


def build_transmitter(
    modality: str,
    encoder_name: str,
    image_size: int,
    num_symbols: int,
    projector_widths: Sequence[int] | None = None,
    encoder_kwargs: Mapping[str, Any] | None = None,
) -> DeviceTransmitter:
    """Build the transmitter of one modality of paper 1.

    Parameters
    ----------
    modality
        ``"rgb"`` (3 channels) or ``"depth"`` (1 channel).
    encoder_name
        ``"resnet18"`` (the paper's) or ``"small_cnn"`` (ours, for fast simulations).
    image_size
        Input side in pixels; ``<= 64`` picks the small-image stem.
    num_symbols
        ``k``, complex channel symbols per sample (``z`` has ``2k`` reals).
    projector_widths
        Widths of the Stage-I projector (e.g. ``(8192, 8192, 8192)`` as in DeCUR); ``None``
        for no projector.
    encoder_kwargs
        Extra encoder arguments (e.g. ``{"widths": (16, 32)}`` for ``"small_cnn"``).

    Returns
    -------
    DeviceTransmitter
        The transmitter; ``forward`` returns ``{"features", "z"}`` (+ ``"p"``).

    Raises
    ------
    ValueError
        For an unknown modality or encoder name, or invalid sizes.
    """
    if modality not in MODALITY_CHANNELS:
        raise ValueError(
            f"modality must be one of {', '.join(MODALITY_CHANNELS)}, got {modality!r}"
        )
    encoder = build_encoder(
        encoder_name, MODALITY_CHANNELS[modality], image_size, **dict(encoder_kwargs or {})
    )
    head = JSCCHead(encoder.feature_dim, num_symbols)
    projector = (
        None if projector_widths is None else Projector(encoder.feature_dim, projector_widths)
    )
    return DeviceTransmitter(encoder, head, projector, modality=modality)
