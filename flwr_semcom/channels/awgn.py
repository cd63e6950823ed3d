"""Additive white Gaussian noise channel on complex symbols.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. II eq. 2 with ``h^m = 1``:
``z_hat = z + n``, ``n ~ CN(0, sigma^2 I)``. The transmitted symbols are first normalised to
unit average power per complex symbol (per sample), so ``SNR = 1 / sigma^2`` and
``sigma^2 = 10^(-snr_db / 10)``; each real and imaginary part of the noise has variance
``sigma^2 / 2``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import AnalogChannel, noise_variance, power_normalize


class AWGNChannel(AnalogChannel):
    """AWGN channel on ``[B, 2k]`` real tensors read as ``k`` complex symbols.

    Parameters
    ----------
    snr_db
        SNR in dB: a finite number for the whole batch, or a tensor ``[B]`` of per-sample
        SNRs (sweeps, fading). Change it with :meth:`set_snr`.

    Notes
    -----
    ``forward`` returns ``power_normalize(x) + n`` with ``n`` real ``[B, 2k]`` Gaussian of
    variance ``sigma_b^2 / 2`` per entry. It is differentiable with respect to ``x``; the
    noise is drawn with ``torch.randn(..., generator=generator)``, so the same seed gives the
    same noise.
    """

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Normalise ``x`` (``[B, 2k]``) and add complex Gaussian noise.

        Raises
        ------
        ValueError
            If ``x`` is not a real floating-point ``[B, 2k]`` tensor, or a per-sample
            ``snr_db`` does not have ``B`` entries.
        """
        s = power_normalize(x)
        var = noise_variance(self.snr_db, s)
        noise = torch.randn(s.shape, generator=generator, dtype=s.dtype, device=s.device)
        return s + noise * (var / 2.0).sqrt()
