"""Progress of a paper-1 server task: method, stage and round for error messages, and the
per-round gradient norms (paper 1, Zhao et al., arXiv 2503.13940, Sec. IV: a diverging
self-supervised loss must stop its method with one line naming method, stage and round).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from flwr_semcom.paper1.stability import NonFiniteError

__all__ = ["Progress"]


class Progress:
    """Method, stage and round for messages, and per-round gradient norms."""

    method: str = "?"
    stage: str = "?"
    round: int = 0

    def init_progress(self, method: str, stage: str) -> None:
        self.method = method
        self.stage = stage
        self.round = 0
        self.grad_norms: list[float] = []
        self.uplink_grad_norms: list[float] = []

    def start_round(self, round_: int) -> None:
        """Set the round named in error messages and clear the per-round norms."""
        self.round = int(round_)
        self.grad_norms = []
        self.uplink_grad_norms = []

    def norm_stats(self) -> dict[str, float]:
        """Mean and max of the round's gradient norms (NaN when none)."""
        out: dict[str, float] = {}
        for name, values in (
            ("grad_norm", self.grad_norms),
            ("uplink_grad_norm", self.uplink_grad_norms),
        ):
            out[f"{name}_mean"] = sum(values) / len(values) if values else math.nan
            out[f"{name}_max"] = max(values) if values else math.nan
        return out

    def _fail(self, what: str) -> NonFiniteError:
        return NonFiniteError(self.method, self.stage, self.round, what)

    def _uplink_leaves(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]]
    ) -> list[dict[str, torch.Tensor]]:
        """The uplinks, checked finite, as fresh leaves that will hold ∂L/∂uplink."""
        for c, up in enumerate(uplinks):
            for name, t in up.items():
                if not bool(torch.isfinite(t).all()):
                    raise self._fail(f"uplink {name!r} from client {c}")
        return [
            {k: v.detach().clone().requires_grad_(True) for k, v in up.items()} for up in uplinks
        ]

    def _check_loss(self, loss: torch.Tensor) -> None:
        if not math.isfinite(float(loss.detach())):
            raise self._fail(f"loss ({float(loss.detach())})")

    def _uplink_grads(
        self, leaves: Sequence[Mapping[str, torch.Tensor]]
    ) -> list[dict[str, torch.Tensor]]:
        """∂L/∂uplink of each leaf (zeros where unused), checked finite; records their norm."""
        grads = [
            {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in leaf.items()}
            for leaf in leaves
        ]
        total = 0.0
        for c, g in enumerate(grads):
            for name, t in g.items():
                if not bool(torch.isfinite(t).all()):
                    raise self._fail(f"gradient of uplink {name!r} for client {c}")
                total += float(t.detach().double().pow(2).sum())
        self.uplink_grad_norms.append(math.sqrt(total))
        return grads
