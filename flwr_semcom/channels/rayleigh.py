"""Block Rayleigh fading channel on complex symbols.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. II eq. 2: ``z_hat = h z + n`` with
``h ~ CN(0, 1)`` one coefficient per sample (block fading: constant over the ``k`` symbols of a
sample, independent between samples) and ``n ~ CN(0, sigma^2 I)``,
``sigma^2 = 10^(-snr_db / 10)``. The transmitted symbols are normalised to unit average power
per complex symbol, so ``snr_db`` is the average received SNR ``E|h|^2 / sigma^2``.

Receiver options: with perfect CSI the receiver knows ``h`` and equalises the block, by
zero forcing (``equalizer="zf"``, default: ``y / h = z + n / h``, unbiased, effective SNR
``|h|^2 / sigma^2``) or by linear MMSE (``equalizer="mmse"``:
``conj(h) y / (|h|^2 + sigma^2)``, biased towards 0 but bounded in deep fades). Without CSI
(``csi="none"``) the raw ``h z + n`` is returned.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import AnalogChannel, noise_variance, power_normalize, to_complex, to_real

CSI_MODES = ("perfect", "none")
EQUALIZERS = ("zf", "mmse")


class RayleighChannel(AnalogChannel):
    """Block Rayleigh fading channel with optional perfect-CSI equalisation.

    Parameters
    ----------
    snr_db
        Average received SNR in dB: a finite number, or a tensor ``[B]`` of per-sample SNRs.
    csi
        ``"perfect"`` (the receiver knows ``h``) or ``"none"``.
    equalize
        Whether the receiver equalises with its CSI. ``None`` (default) means ``True`` for
        ``csi="perfect"`` and ``False`` for ``csi="none"``; ``True`` with ``csi="none"`` is an
        error (nothing to equalise with).
    equalizer
        ``"zf"`` (zero forcing, default) or ``"mmse"`` (linear MMSE).

    Notes
    -----
    Random draws from ``generator``, in this order: ``h`` (real parts ``[B]``, then
    imaginary parts ``[B]``, each ``N(0, 1/2)``), then the noise ``[B, 2k]``.
    """

    def __init__(
        self,
        snr_db: float | Tensor,
        csi: str = "perfect",
        equalize: bool | None = None,
        equalizer: str = "zf",
    ) -> None:
        super().__init__(snr_db)
        if csi not in CSI_MODES:
            raise ValueError(f"csi must be one of {CSI_MODES}, got {csi!r}")
        if equalizer not in EQUALIZERS:
            raise ValueError(f"equalizer must be one of {EQUALIZERS}, got {equalizer!r}")
        if equalize is None:
            equalize = csi == "perfect"
        if not isinstance(equalize, bool):
            raise ValueError(f"equalize must be True, False or None, got {equalize!r}")
        if equalize and csi != "perfect":
            raise ValueError("equalize=True requires csi='perfect' (got csi='none')")
        self.csi = csi
        self.equalize = equalize
        self.equalizer = equalizer

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None, return_h: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Pass ``x`` (``[B, 2k]`` reals) through the fading channel.

        Returns
        -------
        Tensor or (Tensor, Tensor)
            ``y`` (``[B, 2k]`` reals, packed like ``x``), or ``(y, h)`` with ``h`` complex
            ``[B]`` when ``return_h`` is true.
        """
        s = power_normalize(x)
        var = noise_variance(self.snr_db, s)  # [B, 1] or [1, 1]
        B = s.shape[0]
        std = (0.5**0.5) * torch.ones((), dtype=s.dtype, device=s.device)
        h_re = torch.randn(B, generator=generator, dtype=s.dtype, device=s.device) * std
        h_im = torch.randn(B, generator=generator, dtype=s.dtype, device=s.device) * std
        h = torch.complex(h_re, h_im)
        noise = torch.randn(s.shape, generator=generator, dtype=s.dtype, device=s.device)
        n = to_complex(noise * (var / 2.0).sqrt())
        y = h.unsqueeze(1) * to_complex(s) + n
        if self.equalize:
            hc = h.unsqueeze(1)
            denom = hc.abs().pow(2) + (var if self.equalizer == "mmse" else 0.0)
            y = hc.conj() * y / denom  # zf: conj(h) / |h|^2 = 1 / h
        out = to_real(y)
        return (out, h) if return_h else out

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, csi={self.csi!r}, equalize={self.equalize}, "
            f"equalizer={self.equalizer!r}"
        )
