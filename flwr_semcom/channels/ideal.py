"""Noiseless channel: the limit of the AWGN channel as the SNR grows.

Paper 1 (Zhao et al., arXiv 2503.13940) eq. 2 with ``h = 1`` and ``n = 0``; paper 2
(Choi et al., arXiv 2310.09394) eq. 2 with ``p = 0``. For analog (floating-point ``[B, 2k]``)
input it applies the same per-sample power normalisation as the analog channels, so that
swapping ``awgn`` for ``ideal`` changes only the noise; integer index tensors pass unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import channel_uses, power_normalize


class IdealChannel(nn.Module):
    """Identity channel (with power normalisation for real analog input)."""

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Return ``power_normalize(x)`` for floating-point ``[B, 2k]`` input, ``x`` for integers.

        ``generator`` is accepted for interface compatibility and not used.
        """
        if x.is_floating_point():
            return power_normalize(x)
        return x

    def channel_uses(self, x: Tensor) -> int:
        """Channel uses per sample: ``k`` for analog ``[B, 2k]``, the index count otherwise."""
        if x.is_floating_point():
            return channel_uses(x)
        return int(x[0].numel()) if x.dim() > 0 else 1
