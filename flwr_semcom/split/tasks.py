"""Split-learning tasks: what a client computes and what the server learns from it.

The runtime (client handlers, strategy, reference) only moves tensors; a *task* says what they
are. A **client task** (:class:`ClientTask`, built on the node by a :data:`TaskFactory`
registered with :func:`~flwr_semcom.split.client.add_split_client`) gives the client's
differentiable pipeline ``model(*inputs, generator=g) -> {name: tensor}`` (for paper 1 Stage
II: encoder → JSCC head → channel, uplink ``{"z_hat"}``), how to read the inputs of a planned
batch, and the optimizer. A **server task** (:class:`ServerTask`, an object the strategy is
given) holds the server model and its loss on the uplinks of all clients (Stage II: decoder g
on concat(ẑ^1, …, ẑ^M) with cross-entropy, paper 1 eq. 3-4, 16-17), plus the training and
test IDs. :class:`~flwr_semcom.split.device.DeviceTask` and
:class:`~flwr_semcom.split.decoder.DecoderServer` are the ready-made pair for "my encoder and
channel on the devices, my classifier on the server".

Rules a task must follow so that a recomputed forward (the client cannot keep an autograd
graph between messages) equals the original one: draw all randomness from the ``generator``
argument (channel noise) or the batch's ``aug_seed`` (inputs); the runtime also seeds
torch's global RNG per batch before each forward for layers such as dropout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import Context
from torch import nn

from flwr_semcom.guard import check_finite, check_loss
from flwr_semcom.split.schedule import BatchPlan

__all__ = ["ClientTask", "ServerStep", "ServerTask", "TaskFactory"]


class ClientTask(ABC):
    """The client side of a split-learning task (one device).

    Attributes
    ----------
    role
        A short name for logs (e.g. the modality ``"rgb"``).
    model
        The differentiable client pipeline; ``model(*inputs, generator=g)`` returns the uplink
        tensors ``{name: [B, ...]}``. Everything with trainable weights on the device.
    """

    role: str
    model: nn.Module

    @abstractmethod
    def inputs(self, batch: BatchPlan, train: bool) -> tuple[torch.Tensor, ...]:
        """The positional inputs of ``model`` for ``batch`` (augmented with its seed if train)."""

    @abstractmethod
    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh optimizer over ``params`` (its state is restored by the runtime)."""

    def round_lr(self, round_: int) -> float | None:
        """Learning rate of round ``round_`` (a per-round schedule), or ``None``: the optimizer's.

        The runtime sets it before applying the gradients of a batch of that round, so a
        schedule keyed by round stays exact with stale (S > 1) and piggybacked gradients.
        """
        return None

    def sample_ids(self) -> torch.Tensor | None:
        """IDs of the samples this device holds, for the server's alignment check (issue #9:
        devices of different modalities must hold the same scenes); ``None``: not checked."""
        return None


@dataclass
class ServerStep:
    """What one server step returns: the loss, ∂L/∂uplink per client, and sums for metrics."""

    loss: float
    grads: list[dict[str, torch.Tensor]]
    stats: dict[str, float] = field(default_factory=dict)


class ServerTask(ABC):
    """The server side of a split-learning task.

    Attributes
    ----------
    model
        The server model (e.g. the decoder g).
    optimizer
        Its optimizer.
    num_clients
        How many clients (partition IDs ``0..num_clients-1``) the task expects.
    train_ids, test_ids
        int64 sample IDs of the training pass and of the evaluation.
    val_ids
        int64 sample IDs of the validation set (model selection), evaluated after the test
        IDs each round (metrics ``val_loss`` / ``val_accuracy``); empty (the default): none.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    num_clients: int
    train_ids: torch.Tensor
    test_ids: torch.Tensor
    val_ids: torch.Tensor = torch.zeros(0, dtype=torch.int64)

    @abstractmethod
    def loss(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]], batch: BatchPlan
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch from every client's uplink (in partition order), and metric sums.

        The sums must include ``"n"`` (samples) and may include ``"correct"`` and
        ``"loss_sum"`` (loss × samples).
        """

    def start_round(self, round_: int) -> None:  # noqa: B027 - an optional hook
        """Called by the strategy before each training pass (e.g. to set a per-round lr)."""

    def train_step(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]], batch: BatchPlan
    ) -> ServerStep:
        """One optimizer step on one batch; returns ∂L/∂uplink for every client.

        Non-finite guard (issue #9): the received uplinks, the loss and the gradients are
        checked before the step (:class:`~flwr_semcom.guard.NonFiniteError`).
        """
        where = f"split server step, batch {batch.index}"
        check_finite("uplinks", list(uplinks), where=where, consequence="not used")
        leaves = [
            {k: v.detach().clone().requires_grad_(True) for k, v in up.items()} for up in uplinks
        ]
        self.model.train()
        loss, stats = self.loss(leaves, batch)
        check_loss(loss, where=where, step=batch.index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [
            {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in leaf.items()}
            for leaf in leaves
        ]
        params = {n: p.grad for n, p in self.model.named_parameters() if p.grad is not None}
        check_finite("gradients", [params, grads], where=where, consequence="training stopped")
        self.optimizer.step()
        return ServerStep(float(loss.detach()), grads, stats)

    def input_gradients(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]], batch: BatchPlan
    ) -> list[dict[str, torch.Tensor]]:
        """∂L/∂uplink for every client at the server model's *current* weights, without a
        step: the weights, their ``.grad``, the optimizer and the buffers (e.g. batch-norm
        running statistics) are left as they were. Train mode, like :meth:`train_step`; the
        caller seeds torch's global RNG as for the step. Used by
        ``server_gradients = "group_end"`` (docs/schedules.md)."""
        where = f"split server gradients, batch {batch.index}"
        leaves = [
            {k: v.detach().clone().requires_grad_(True) for k, v in up.items()} for up in uplinks
        ]
        buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        self.model.train()
        try:
            loss, _ = self.loss(leaves, batch)
            check_loss(loss, where=where, step=batch.index)
            flat = [v for leaf in leaves for v in leaf.values()]
            got = torch.autograd.grad(loss, flat, allow_unused=True)
        finally:
            with torch.no_grad():
                for n, b in self.model.named_buffers():
                    b.copy_(buffers[n])
        it = iter(got)
        grads = [
            {k: (g if (g := next(it)) is not None else torch.zeros_like(v)) for k, v in lf.items()}
            for lf in leaves
        ]
        check_finite("gradients", grads, where=where, consequence="training stopped")
        return grads

    def channel_uses(self, uplink: Mapping[str, torch.Tensor]) -> int:
        """Complex channel uses of one batch's uplink from one client.

        Default: an analog ``"z_hat"`` ``[B, 2k]`` uses ``k`` per sample (paper 1 eq. 2);
        anything else travels over an ordinary data link (0).
        """
        z = uplink.get("z_hat")
        return 0 if z is None else int(z.shape[0]) * (int(z.shape[1]) // 2)

    @torch.no_grad()
    def eval_step(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]], batch: BatchPlan
    ) -> dict[str, float]:
        """Metric sums of one evaluation batch (eval mode, no gradients)."""
        check_finite(
            "uplinks",
            list(uplinks),
            where=f"split evaluation, batch {batch.index}",
            consequence="not used",
        )
        self.model.eval()
        _, stats = self.loss(uplinks, batch)
        return stats


#: Builds a node's client task from its ``Context`` (``node_config``, ``run_config``) and the
#: task parameters of the message (the non-reserved keys of its ``"config"`` record).
TaskFactory = Callable[[Context, Mapping[str, Any]], ClientTask]
