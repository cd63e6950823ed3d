"""The server side of split learning for any classifier on the devices' received features.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. II eq. 3-4 and Sec. III-B eq. 16-17: the server
concatenates the received features ẑ = [ẑ^1, …, ẑ^M] (eq. 3, in partition order), infers
ŷ = g(ẑ; φ) (eq. 4), trains g with cross-entropy (eq. 16) and returns ∂L/∂ẑ^m (eq. 17) to
every device. :class:`DecoderServer` wraps a user's own ``g``::

    server = DecoderServer(
        nn.Linear(2 * k * M, num_classes), labels,
        train_ids=train, test_ids=test, num_clients=M,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
    )
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flwr_semcom.split.schedule import BatchPlan
from flwr_semcom.split.tasks import ServerTask

__all__ = ["DecoderServer", "cross_entropy_stats", "set_lr"]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def cross_entropy_stats(
    logits: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy (eq. 16) and the sums ``n``, ``correct``, ``loss_sum`` for metrics."""
    loss = F.cross_entropy(logits, y)
    n = int(y.shape[0])
    correct = int((logits.argmax(1) == y).sum())
    return loss, {"n": float(n), "correct": float(correct), "loss_sum": float(loss.detach()) * n}


class DecoderServer(ServerTask):
    """Classifier ``g`` on the concatenated ``"z_hat"`` uplinks, trained with cross-entropy.

    Parameters
    ----------
    model
        ``g``: maps ``[B, Σ_m dim(ẑ^m)]`` to logits ``[B, C]`` (or to ``{"logits": ...}``).
    labels
        int64 ``[N]``: the label of every sample ID.
    train_ids, test_ids
        Sample IDs of the training pass and of the evaluation.
    val_ids
        Sample IDs of the validation set (evaluated after the test IDs; default: none).
    num_clients
        Devices whose uplinks form one batch (partition IDs ``0..num_clients-1``).
    optimizer
        An optimizer over ``model``'s parameters, or a factory ``optimizer(params)``.
    lr_schedule
        ``lr_schedule(round)``: the learning rate set before each round; ``None``: constant.
    uplink
        Name of the uplink tensor to decode.
    """

    def __init__(
        self,
        model: nn.Module,
        labels: torch.Tensor,
        *,
        train_ids: torch.Tensor,
        test_ids: torch.Tensor,
        num_clients: int,
        optimizer: torch.optim.Optimizer
        | Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        lr_schedule: Callable[[int], float] | None = None,
        uplink: str = "z_hat",
        val_ids: torch.Tensor | None = None,
    ) -> None:
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
            raise ValueError(f"num_clients must be an integer >= 1, got {num_clients!r}")
        self.model = model
        self.labels = labels
        self.train_ids = torch.as_tensor(train_ids, dtype=torch.int64)
        self.test_ids = torch.as_tensor(test_ids, dtype=torch.int64)
        self.val_ids = torch.as_tensor([] if val_ids is None else val_ids, dtype=torch.int64)
        self.num_clients = num_clients
        self.optimizer = (
            optimizer
            if isinstance(optimizer, torch.optim.Optimizer)
            else optimizer(model.parameters())
        )
        self.lr_schedule = lr_schedule
        self.uplink = uplink

    def start_round(self, round_: int) -> None:
        """Set the round's learning rate (with ``lr_schedule``)."""
        if self.lr_schedule is not None:
            set_lr(self.optimizer, float(self.lr_schedule(round_)))

    def logits(self, uplinks: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
        """``g(concat(ẑ^1, …, ẑ^M))`` (eq. 3-4)."""
        z = torch.cat([u[self.uplink] for u in uplinks], dim=1)
        out = self.model(z)
        logits: torch.Tensor = out["logits"] if isinstance(out, dict) else out
        return logits

    def loss(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]], batch: BatchPlan
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of the batch's labels (eq. 16) and the metric sums."""
        return cross_entropy_stats(self.logits(uplinks), self.labels[batch.ids])
