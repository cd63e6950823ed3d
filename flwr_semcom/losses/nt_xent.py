r"""NT-Xent (normalised temperature-scaled cross entropy), the SimCLR loss.

Paper 1 (Zhao et al., arXiv 2503.13940) eq. 18, the SimCLR baseline; Chen et al., "A Simple
Framework for Contrastive Learning of Visual Representations", ICML 2020. For the ``2N``
embeddings :math:`z_1..z_{2N}` of two views of ``N`` samples (``z_i`` and ``z_{i+N}`` are a
positive pair),

.. math::

    \ell_i = -\log \frac{\exp(\mathrm{sim}(z_i, z_{p(i)}) / \tau)}
                        {\sum_{k \ne i} \exp(\mathrm{sim}(z_i, z_k) / \tau)},
    \qquad \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i,

with cosine similarity ``sim`` and temperature :math:`\tau`; the denominator runs over the
other ``2N - 1`` embeddings (the positive included). Same convention as
``lightly.loss.NTXentLoss`` without a memory bank.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .barlow_twins import check_pair


class NTXentLoss(nn.Module):
    r"""NT-Xent loss (paper 1 eq. 18), mean over the ``2N`` anchors.

    Parameters
    ----------
    temperature
        :math:`\tau > 0` (finite); default 0.5 (SimCLR's CIFAR setting, lightly's default).
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, Real):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        t = float(temperature)
        if not math.isfinite(t) or t <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {t}")
        self.temperature: float = t

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """Loss for two views ``z_a``, ``z_b`` of shape ``[N, D]`` (row ``i`` of each is a pair)."""
        check_pair(z_a, z_b, min_batch=1)
        n = z_a.shape[0]
        z = F.normalize(torch.cat([z_a, z_b], dim=0), dim=1)
        logits = z @ z.T / self.temperature
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        idx = torch.arange(n, device=z.device)
        targets = torch.cat([idx + n, idx])
        return F.cross_entropy(logits, targets, reduction="mean")

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
