r"""VQ-VAE loss, paper 2 eq. 7 (van den Oord et al., "Neural Discrete Representation Learning").

Choi et al., arXiv 2310.09394, Sec. III-B, eq. 7: the SLF fine-tuning loss of a transceiver
(ENC, codebook, DEC) on an image :math:`x` is

.. math::

    \mathcal{L} = \|x - \hat{x}\|_2^2 + \|\mathrm{sg}[z_e] - z_q\|_2^2
                  + \beta \, \|z_e - \mathrm{sg}[z_q]\|_2^2 ,

reconstruction + codebook term + :math:`\beta` × commitment term, with :math:`\mathrm{sg}` the
stop-gradient. Each squared norm is a mean over elements (and the batch), as in the usual
VQ-VAE implementations. The classifier of the classification task adds no term.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VQVAELoss"]


class VQVAELoss(nn.Module):
    r"""Paper 2 eq. 7 on the transceiver's output dict.

    Parameters
    ----------
    beta
        Commitment weight :math:`\beta \ge 0` (finite); 0.25 in van den Oord et al.
    """

    def __init__(self, beta: float = 0.25) -> None:
        super().__init__()
        if isinstance(beta, bool) or not isinstance(beta, Real) or not math.isfinite(beta):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        if beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        self.beta: float = float(beta)

    def forward(self, out: Mapping[str, Any], x: Tensor) -> dict[str, Tensor]:
        """Loss terms for a model output ``out`` (keys ``x_hat``, ``z_e``, ``z_q``) and ``x``.

        Returns
        -------
        dict
            ``loss`` (the total, differentiable), ``recon`` (MSE), ``codebook``,
            ``commitment`` (both unweighted).
        """
        missing = [k for k in ("x_hat", "z_e", "z_q") if k not in out]
        if missing:
            raise KeyError(f"VQVAELoss needs the model outputs {missing}; got keys {sorted(out)}")
        x_hat, z_e, z_q = out["x_hat"], out["z_e"], out["z_q"]
        if x_hat.shape != x.shape:
            raise ValueError(f"x_hat shape {tuple(x_hat.shape)} != x shape {tuple(x.shape)}")
        recon = F.mse_loss(x_hat, x)
        codebook = F.mse_loss(z_q, z_e.detach())
        commitment = F.mse_loss(z_e, z_q.detach())
        return {
            "loss": recon + codebook + self.beta * commitment,
            "recon": recon,
            "codebook": codebook,
            "commitment": commitment,
        }
