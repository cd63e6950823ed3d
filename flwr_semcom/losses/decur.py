r"""DeCUR loss: decoupled common and unique representations of two modalities.

Paper 1 (Zhao et al., arXiv 2503.13940) eq. 7-15, after DeCUR (Wang et al., arXiv 2309.05300,
official code ``zhu-xlab/DeCUR``). For modalities 1 and 2, each seen in two augmented views
``a`` and ``b`` (embeddings ``[B, D]``):

* intra-modal (eq. 9-10): Barlow Twins between the views of each modality,
  ``intra_1 = BT(z1_a, z1_b)``, ``intra_2 = BT(z2_a, z2_b)``;
* cross-modal (eq. 11-14) on ``C = C(z1_a, z2_a)`` (view ``a`` of each modality, as the
  official code's ``bt_loss_cross(z1_1, z2_1)``), split into the common block
  ``C[:K_sha, :K_sha]`` (eq. 13: diagonal -> 1, off-diagonal weighted by lambda) and the
  unique block ``C[K_sha:, K_sha:]`` (eq. 14: diagonal -> 0, off-diagonal weighted by
  lambda); the off-block entries are unconstrained.

``C`` is computed as in :mod:`.barlow_twins` (batch standardisation, ``/ B``). One lambda is
used for ``lambda_m``, ``lambda_sha`` and ``lambda_uni`` (the official code's single
``--lambd``, 0.0051).

Reductions
----------
``"sum"`` (default): ``intra_1 + intra_2 + cross_common + cross_unique``, eq. 7 with eq. 12
counted once per *unordered* modality pair. (Eq. 12 sums over ordered pairs ``m != n``; since
``C^{2,1} = (C^{1,2})^T`` gives the same value, the literal reading doubles the cross term for
M = 2. We count the pair once so that with ``common_dim = D`` the loss is the plain sum of the
three Barlow Twins losses.) Default because it is the objective paper 1 states.

``"mean"``: DeCUR's official code,
``(intra_1 + intra_2 + (cross_common + cross_unique) / 2) / 3``. Note this is not just a
rescaling of ``"sum"``: the cross term's weight relative to the intra terms is halved.

:meth:`DeCURLoss.forward_terms` returns the unreduced terms and :attr:`DeCURLoss.weights` the
weights of the reduction (``loss = sum_t weights[t] * terms[t]``), so a strategy can compute the
intra terms on the devices (``local`` placement) and the cross term elsewhere.
"""

from __future__ import annotations

from numbers import Integral

from torch import Tensor, nn

from .barlow_twins import (
    BN_EPS,
    DEFAULT_LAMBDA,
    barlow_twins_from_c,
    check_pair,
    cross_correlation,
    validate_nonneg,
)

REDUCTIONS = ("sum", "mean")
TERMS = ("intra_1", "intra_2", "cross_common", "cross_unique")


class DeCURLoss(nn.Module):
    """DeCUR pre-training loss (paper 1 eq. 7-15).

    Parameters
    ----------
    common_dim
        ``K_sha``: the first ``common_dim`` embedding dimensions are shared between the
        modalities, the remaining ``D - K_sha`` are modality-unique; ``0 <= K_sha <= D``
        (``D`` is checked in ``forward``). DeCUR uses 75% of ``D`` for RGB-D.
    lambda_offdiag
        Off-diagonal weight (``>= 0``), default 0.0051.
    reduction
        ``"sum"`` (paper 1 eq. 7, default) or ``"mean"`` (DeCUR's official code).
    eps
        Variance floor of the batch standardisation (``nn.BatchNorm1d``'s 1e-5).
    """

    def __init__(
        self,
        common_dim: int,
        lambda_offdiag: float = DEFAULT_LAMBDA,
        reduction: str = "sum",
        eps: float = BN_EPS,
    ) -> None:
        super().__init__()
        if isinstance(common_dim, bool) or not isinstance(common_dim, Integral) or common_dim < 0:
            raise ValueError(f"common_dim must be an integer >= 0, got {common_dim!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.common_dim: int = int(common_dim)
        self.lambda_offdiag: float = validate_nonneg("lambda_offdiag", lambda_offdiag)
        self.reduction: str = reduction
        self.eps: float = validate_nonneg("eps", eps)

    @property
    def weights(self) -> dict[str, float]:
        """Weight of each term in the reduced loss (``loss = sum_t weights[t] * terms[t]``)."""
        if self.reduction == "sum":
            return dict.fromkeys(TERMS, 1.0)
        return {"intra_1": 1 / 3, "intra_2": 1 / 3, "cross_common": 1 / 6, "cross_unique": 1 / 6}

    def intra_term(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """Intra-modal Barlow Twins term (eq. 10) between two views of one modality."""
        check_pair(z_a, z_b)
        return barlow_twins_from_c(cross_correlation(z_a, z_b, self.eps), self.lambda_offdiag)

    def cross_terms(self, z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
        """Cross-modal terms (eq. 13, 14) between modality-1 and modality-2 embeddings.

        Returns
        -------
        dict
            ``{"cross_common": L_sha, "cross_unique": L_uni}``.
        """
        check_pair(z1, z2)
        d = z1.shape[1]
        if self.common_dim > d:
            raise ValueError(
                f"common_dim must be in [0, D={d}] (the embedding dimension), got {self.common_dim}"
            )
        c = cross_correlation(z1, z2, self.eps)
        k = self.common_dim
        return {
            "cross_common": barlow_twins_from_c(c[:k, :k], self.lambda_offdiag, 1.0),
            "cross_unique": barlow_twins_from_c(c[k:, k:], self.lambda_offdiag, 0.0),
        }

    def forward_terms(
        self, z1_a: Tensor, z1_b: Tensor, z2_a: Tensor, z2_b: Tensor
    ) -> dict[str, Tensor]:
        """All terms and the reduced loss.

        Returns
        -------
        dict
            ``intra_1``, ``intra_2``, ``cross_common``, ``cross_unique``, ``cross``
            (``cross_common + cross_unique``, eq. 12 for one pair) and ``loss`` (reduced).
        """
        terms = {
            "intra_1": self.intra_term(z1_a, z1_b),
            "intra_2": self.intra_term(z2_a, z2_b),
            **self.cross_terms(z1_a, z2_a),
        }
        w = self.weights
        loss = sum(w[t] * terms[t] for t in TERMS)
        terms["cross"] = terms["cross_common"] + terms["cross_unique"]
        terms["loss"] = loss  # type: ignore[assignment]
        return terms

    def forward(self, z1_a: Tensor, z1_b: Tensor, z2_a: Tensor, z2_b: Tensor) -> Tensor:
        """Reduced DeCUR loss for views ``a``/``b`` of modality 1 and modality 2."""
        return self.forward_terms(z1_a, z1_b, z2_a, z2_b)["loss"]

    def extra_repr(self) -> str:
        return (
            f"common_dim={self.common_dim}, lambda_offdiag={self.lambda_offdiag}, "
            f"reduction={self.reduction!r}, eps={self.eps}"
        )
