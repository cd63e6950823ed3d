r"""Barlow Twins loss (redundancy reduction between two views).

Paper 1 (Zhao et al., arXiv 2503.13940) eq. 19, the Barlow Twins baseline, and eq. 8 / 10 (the
intra-modal term of the proposed pre-training); Zbontar et al., "Barlow Twins", ICML 2021:

.. math::

    \mathcal{L}_{BT} = \sum_i (1 - C_{ii})^2 + \lambda \sum_i \sum_{j \ne i} C_{ij}^2,
    \qquad C = \frac{1}{B} \bar z_a^\top \bar z_b,

where :math:`\bar z` is :math:`z` standardised over the batch per dimension
(:func:`standardize`: ``(z - mean) / sqrt(var + eps)`` with the biased variance, exactly
``nn.BatchNorm1d(D, affine=False)`` in training mode, as in the official Barlow Twins and
DeCUR code). Paper 1's eq. 8 writes :math:`C` as a cosine of *uncentred* columns; the two agree
for zero-mean columns and ``eps = 0`` (a test checks this). We follow the official codes.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor, nn

DEFAULT_LAMBDA = 0.0051
"""Off-diagonal weight of the official Barlow Twins and DeCUR code (lightly uses 5e-3)."""

BN_EPS = 1e-5
"""``nn.BatchNorm1d``'s default ``eps`` (added to the variance)."""


def validate_nonneg(name: str, value: object) -> float:
    """Return ``float(value)`` if it is a finite real number ``>= 0``, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    return v


def check_pair(z_a: Tensor, z_b: Tensor, min_batch: int = 2) -> None:
    """Check two embedding batches: floating point, same shape ``[B, D]``, ``B >= min_batch``."""
    for name, z in (("z_a", z_a), ("z_b", z_b)):
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor [B, D]")
        if z.dim() != 2:
            raise ValueError(f"{name} must have shape [B, D], got {list(z.shape)}")
    if z_a.shape != z_b.shape:
        raise ValueError(
            f"the two views must have the same shape [B, D], got {list(z_a.shape)} "
            f"and {list(z_b.shape)}"
        )
    if z_a.shape[0] < min_batch:
        raise ValueError(f"batch size must be >= {min_batch}, got {z_a.shape[0]}")


def standardize(z: Tensor, eps: float = BN_EPS) -> Tensor:
    """Standardise each column of ``z`` (``[B, D]``) over the batch (biased variance).

    ``(z - mean) / sqrt(var + eps)``: ``nn.BatchNorm1d(D, affine=False)`` in training mode,
    without running statistics (so train and eval modes give the same loss).
    """
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def cross_correlation(z_a: Tensor, z_b: Tensor, eps: float = BN_EPS) -> Tensor:
    """Cross-correlation matrix ``C = standardize(z_a)^T standardize(z_b) / B`` (``[D, D]``)."""
    return standardize(z_a, eps).T @ standardize(z_b, eps) / z_a.shape[0]


def off_diagonal_sq_sum(c: Tensor) -> Tensor:
    """Sum of the squared off-diagonal entries of a square matrix (0 for 0x0 or 1x1)."""
    return c.pow(2).sum() - torch.diagonal(c).pow(2).sum()


def barlow_twins_from_c(c: Tensor, lambda_offdiag: float, diag_target: float = 1.0) -> Tensor:
    """``sum_i (diag_target - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` for a square ``C``."""
    on = (torch.diagonal(c) - diag_target).pow(2).sum()
    return on + lambda_offdiag * off_diagonal_sq_sum(c)


class BarlowTwinsLoss(nn.Module):
    r"""Barlow Twins loss, paper 1 eq. 19 (Zbontar et al. 2021).

    Parameters
    ----------
    lambda_offdiag
        Weight :math:`\lambda \ge 0` of the off-diagonal (redundancy) term; default 0.0051
        as in the official Barlow Twins code (``lightly.loss.BarlowTwinsLoss`` defaults to
        5e-3; with ``lambda_param=0.0051`` the two agree to float precision).
    eps
        Added to the batch variance when standardising (``nn.BatchNorm1d``'s 1e-5).

    Notes
    -----
    The loss is a sum (not a mean) over the ``D x D`` entries of ``C``, invariant to a joint
    permutation of the batch and to swapping the two views.
    """

    def __init__(self, lambda_offdiag: float = DEFAULT_LAMBDA, eps: float = BN_EPS) -> None:
        super().__init__()
        self.lambda_offdiag: float = validate_nonneg("lambda_offdiag", lambda_offdiag)
        self.eps: float = validate_nonneg("eps", eps)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """Loss between two views ``z_a``, ``z_b`` of shape ``[B, D]`` (``B >= 2``)."""
        check_pair(z_a, z_b)
        return barlow_twins_from_c(cross_correlation(z_a, z_b, self.eps), self.lambda_offdiag)

    def extra_repr(self) -> str:
        return f"lambda_offdiag={self.lambda_offdiag}, eps={self.eps}"
