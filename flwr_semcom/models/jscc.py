"""JSCC head: encoder features → k complex channel symbols, as 2k reals.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. II eq. 1-2: the device sends its semantic
features over a complex AWGN channel, ẑ^m = h^m z^m + n^m. :class:`JSCCHead` is the last layer
of the transmitter: a ``Linear`` that maps the encoder features to ``2k`` real numbers read as
``k`` complex symbols, real parts first (``z[:, :k]``) and imaginary parts second
(``z[:, k:]``), the layout every analog channel in ``flwr_semcom.channels`` expects. Power
normalisation is done by the channel, so the head has no output normalisation.

:func:`bandwidth_ratio` is the usual deep-JSCC rate measure (Bourtsoulatze et al., 2019):
channel uses per source dimension, ``k / (C·H·W)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flwr_semcom.models.utils import check_positive_int

__all__ = ["JSCCHead", "bandwidth_ratio"]


class JSCCHead(nn.Module):
    """Map features ``[B, in_dim]`` to ``[B, 2k]`` reals = ``k`` complex channel symbols.

    Parameters
    ----------
    in_dim
        Size of the encoder features (512 for ResNet-18), ≥ 1.
    num_symbols
        ``k``, complex channel symbols per sample (channel uses), ≥ 1.

    Attributes
    ----------
    out_dim : int
        ``2 * num_symbols``; ``z[:, :k]`` are real parts, ``z[:, k:]`` imaginary parts.

    Notes
    -----
    Parameters: ``in_dim * 2k + 2k`` (weights and bias).
    """

    def __init__(self, in_dim: int, num_symbols: int) -> None:
        super().__init__()
        check_positive_int("in_dim", in_dim)
        check_positive_int("num_symbols", num_symbols)
        self.in_dim = in_dim
        self.num_symbols = num_symbols
        self.out_dim = 2 * num_symbols
        self.linear = nn.Linear(in_dim, self.out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Channel input ``z`` of shape ``[B, 2k]`` (real parts, then imaginary parts)."""
        if features.dim() != 2 or features.shape[1] != self.in_dim:
            raise ValueError(
                f"expected features [B, {self.in_dim}], got shape {tuple(features.shape)}"
            )
        out: torch.Tensor = self.linear(features)
        return out

    @staticmethod
    def to_complex(z: torch.Tensor) -> torch.Tensor:
        """View ``[B, 2k]`` reals as ``[B, k]`` complex symbols (``z[:, :k] + j z[:, k:]``)."""
        if z.dim() != 2 or z.shape[1] % 2:
            raise ValueError(f"expected [B, 2k] reals with an even last dim, got {tuple(z.shape)}")
        k = z.shape[1] // 2
        return torch.complex(z[:, :k], z[:, k:])


def bandwidth_ratio(num_symbols: int, input_shape: Sequence[int]) -> float:
    """Channel uses per source dimension, ``k / (C·H·W)``.

    Parameters
    ----------
    num_symbols
        ``k``, complex symbols sent per sample.
    input_shape
        Shape of one sample ``(C, H, W)``, without the batch dimension.

    Returns
    -------
    float
        The bandwidth (compression) ratio; e.g. ``k = 256`` for a 3×32×32 image gives
        ``256 / 3072 = 1/12``.

    Raises
    ------
    ValueError
        If ``num_symbols < 1``, ``input_shape`` does not have exactly 3 entries, or an entry
        is not a positive int.
    """
    check_positive_int("num_symbols", num_symbols)
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"input_shape must be one sample's (C, H, W) without the batch dim, got {shape}"
        )
    source_dims = 1
    for d in shape:
        check_positive_int("input_shape entries", d)
        source_dims *= d
    return num_symbols / source_dims
