"""K-ary discrete memoryless channel (DMC) over codeword indices.

Paper 2 (Choi et al., "SLF semantics alignment", arXiv 2310.09394), eq. 2: an index ``i`` is
received as ``i`` with probability ``1 - p`` and as each other index ``j != i`` with
probability ``p / (K - 1)``, independently for every transmitted index (memoryless).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor, nn


def _validate_num_symbols(num_symbols: object) -> int:
    if isinstance(num_symbols, bool) or not isinstance(num_symbols, Integral):
        raise ValueError(f"num_symbols must be an integer >= 2, got {num_symbols!r}")
    if int(num_symbols) < 2:
        raise ValueError(f"num_symbols must be an integer >= 2, got {num_symbols}")
    return int(num_symbols)


def _validate_crossover(crossover: object) -> float:
    if isinstance(crossover, bool) or not isinstance(crossover, Real):
        raise ValueError(f"crossover must be a real number in [0, 1], got {crossover!r}")
    p = float(crossover)
    if not math.isfinite(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"crossover must be in [0, 1], got {p}")
    return p


class DiscreteMemorylessChannel(nn.Module):
    """K-ary symmetric DMC on integer index tensors (paper 2, eq. 2).

    Parameters
    ----------
    num_symbols
        Alphabet size ``K >= 2`` (the codebook size); indices are in ``[0, K)``.
    crossover
        Crossover probability ``p`` in ``[0, 1]``: the probability that an index is received
        as a different one, chosen uniformly among the other ``K - 1``.

    Notes
    -----
    A flip is drawn as ``j = (i + u) mod K`` with ``u`` uniform on ``{1, ..., K-1}``, which
    is uniform over the ``K - 1`` indices other than ``i``. ``p = 0`` is the identity, and
    ``p = 1`` never returns the sent index. Randomness comes from ``generator`` (first a
    uniform ``[0, 1)`` tensor for the flip decisions, then the offsets), so the same seed
    gives the same output.
    """

    def __init__(self, num_symbols: int, crossover: float) -> None:
        super().__init__()
        self.num_symbols = _validate_num_symbols(num_symbols)
        self.crossover = _validate_crossover(crossover)

    def set_crossover(self, crossover: float) -> None:
        """Change the crossover probability ``p`` (in ``[0, 1]``)."""
        self.crossover = _validate_crossover(crossover)

    def transition_matrix(self) -> Tensor:
        """The ``K x K`` matrix ``P[i, j] = Pr(receive j | send i)`` of eq. 2 (float64)."""
        K, p = self.num_symbols, self.crossover
        off = p / (K - 1)
        mat = torch.full((K, K), off, dtype=torch.float64)
        mat.fill_diagonal_(1.0 - p)
        return mat

    def channel_uses(self, indices: Tensor) -> int:
        """Channel uses (transmitted indices) per sample: ``indices[0].numel()``."""
        return int(indices[0].numel()) if indices.dim() > 0 else 1

    def forward(self, indices: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pass integer indices (any shape) through the channel.

        Parameters
        ----------
        indices
            Integer tensor with entries in ``[0, num_symbols)``.
        generator
            Optional random generator (on the device of ``indices``).

        Returns
        -------
        Tensor
            Received indices, same shape and dtype as ``indices``.

        Raises
        ------
        ValueError
            If ``indices`` is not an integer tensor or has an entry outside ``[0, K)``.
        """
        if not isinstance(indices, Tensor) or indices.is_floating_point() or indices.is_complex():
            dtype = indices.dtype if isinstance(indices, Tensor) else type(indices).__name__
            raise ValueError(f"indices must be an integer tensor, got {dtype}")
        if indices.dtype == torch.bool:
            raise ValueError("indices must be an integer tensor, got torch.bool")
        K = self.num_symbols
        if indices.numel() > 0:
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= K:
                raise ValueError(
                    f"indices must be in [0, num_symbols={K}), got values in [{lo}, {hi}]"
                )
        flip = (
            torch.rand(indices.shape, generator=generator, device=indices.device) < self.crossover
        )
        offset = torch.randint(
            1, K, indices.shape, generator=generator, device=indices.device, dtype=torch.int64
        )
        flipped = (indices.to(torch.int64) + offset) % K
        return torch.where(flip, flipped, indices.to(torch.int64)).to(indices.dtype)

    def extra_repr(self) -> str:
        return f"num_symbols={self.num_symbols}, crossover={self.crossover}"
