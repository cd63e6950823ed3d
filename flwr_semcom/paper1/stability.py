"""Training stability: gradient norms and the non-finite stop (issue "[Paper 1]", item 8).

Paper 1 (Zhao et al., arXiv 2503.13940, Sec. IV, Fig. 5) reports that Barlow Twins
pretraining "suffers from exploding gradient issues" with 50 % labels. We never hide that: a
non-finite loss or gradient stops the method's training at once with a
:class:`NonFiniteError` whose message names the method, the stage and the round, and the
runner records it in ``summary.json``. The class lives in :mod:`flwr_semcom.guard` (the
non-finite guard of the whole project) and is re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from flwr_semcom.guard import NonFiniteError  # the one class; re-exported for paper-1 code

__all__ = ["NonFiniteError", "check_finite", "check_tensors", "grad_norm"]


def check_finite(value: float, *, method: str, stage: str, round_: int, what: str) -> None:
    """Raise :class:`NonFiniteError` unless ``value`` is finite."""
    if not math.isfinite(float(value)):
        raise NonFiniteError(method, stage, round_, f"{what} ({value})")


def check_tensors(
    tensors: Mapping[str, torch.Tensor], *, method: str, stage: str, round_: int, what: str
) -> None:
    """Raise :class:`NonFiniteError` if any tensor holds a NaN or an infinity."""
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(method, stage, round_, f"{what} {name!r}")


def grad_norm(params: Iterable[nn.Parameter] | Iterable[torch.Tensor]) -> float:
    """Global L2 norm of the gradients of ``params`` (``.grad``; missing grads count 0)."""
    total = 0.0
    for p in params:
        g = p.grad if isinstance(p, nn.Parameter) or p.grad is not None else None
        if g is not None:
            total += float(g.detach().double().pow(2).sum())
    return math.sqrt(total)
