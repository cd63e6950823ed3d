"""Server-side decoder g(ẑ; φ) on the concatenated received features.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. II eq. 3-4: the server concatenates the received
features of all modalities, ẑ = concat(ẑ^1, …, ẑ^M) (eq. 3), and infers ŷ = g(ẑ; φ) (eq. 4).
Each ẑ^m arrives as ``[B, 2k_m]`` reals (real parts, then imaginary parts), so the decoder's
``in_dim`` is ``Σ_m 2 k_m``. The paper does not specify g; we use an MLP
(``Linear-ReLU-Linear``), or a single ``Linear`` with ``hidden=None`` (a linear probe).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flwr_semcom.models import MODELS
from flwr_semcom.models.utils import check_positive_int

__all__ = ["ServerDecoder"]


@MODELS.register("server_decoder")
class ServerDecoder(nn.Module):
    """Classifier g(ẑ; φ) on ẑ = concat(ẑ^1, …, ẑ^M) (paper 1, eq. 3-4).

    Parameters
    ----------
    in_dim
        Size of the concatenated received features, ``Σ_m 2 k_m`` (≥ 1).
    num_classes
        Number of classes (10 for NYU Depth V2 scenes), ≥ 2.
    hidden
        Hidden width of the MLP ``Linear-ReLU-Linear``; ``None`` for a single ``Linear``.

    Notes
    -----
    ``forward(z_hat)`` accepts ``[B, in_dim]`` or a sequence of per-modality tensors
    ``[B, 2k_m]`` (concatenated along dim 1, eq. 3) and returns ``{"logits": [B, num_classes]}``.
    Parameters: ``(in_dim + 1) * hidden + (hidden + 1) * num_classes``, or
    ``(in_dim + 1) * num_classes`` without hidden layer.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int | None = None) -> None:
        super().__init__()
        check_positive_int("in_dim", in_dim)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if hidden is not None:
            check_positive_int("hidden", hidden)
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.hidden = hidden
        self.net: nn.Module
        if hidden is None:
            self.net = nn.Linear(in_dim, num_classes)
        else:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
            )

    def forward(self, z_hat: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits from the received features (eq. 4).

        Parameters
        ----------
        z_hat
            ``[B, in_dim]``, or the per-modality received features ``[ẑ^1, …, ẑ^M]`` with
            ``[B, 2k_m]`` each, concatenated here in the given order (eq. 3).

        Returns
        -------
        dict[str, torch.Tensor]
            ``{"logits": [B, num_classes]}``.
        """
        z = z_hat if isinstance(z_hat, torch.Tensor) else torch.cat(list(z_hat), dim=1)
        if z.dim() != 2 or z.shape[1] != self.in_dim:
            raise ValueError(
                f"expected received features [B, {self.in_dim}] (concatenated over modalities), "
                f"got shape {tuple(z.shape)}"
            )
        logits: torch.Tensor = self.net(z)
        return {"logits": logits}
