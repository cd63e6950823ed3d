"""The computation of a ``train.split_step``: forward the planned batches, and replay them to
apply the server's gradients (docs/split.md, "The S schedule").

An autograd graph cannot survive between Flower messages, so the gradients ∂L/∂uplink of a
group of batches are applied by recomputing each batch's forward at the weights that produced
its features (θ_start) with :func:`torch.func.functional_call` on copies of the weights and
buffers: batch-norm running statistics are updated exactly once per batch (by the forward),
and the copies of the buffers replay the values the original forward saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from flwr.app import ArrayRecord
from torch import nn

from flwr_semcom.split.schedule import BatchPlan
from flwr_semcom.split.tasks import ClientTask

__all__ = ["apply_gradients", "buffers_record", "forward_batches"]


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _to_device(xs: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(x.to(device) for x in xs)


def forward_batches(
    task: ClientTask, batches: Sequence[BatchPlan], train: bool, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """Uplink tensors of ``batches`` (no graph; train mode updates batch-norm statistics)."""
    model = task.model
    model.train(train)
    out: list[dict[str, torch.Tensor]] = []
    with torch.no_grad():
        for b in batches:
            torch.manual_seed(b.noise_seed)
            xs = _to_device(task.inputs(b, train), device)
            up = model(*xs, generator=_generator(b.noise_seed, device))
            out.append({k: v.detach() for k, v in up.items()})
    return out


def apply_gradients(
    task: ClientTask,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[BatchPlan],
    grads: Sequence[Mapping[str, torch.Tensor]],
    buffers_before: Mapping[str, torch.Tensor],
    device: torch.device,
) -> None:
    """One optimizer step per batch with the parameter gradients of the stale forward.

    For batch ``t`` the forward is recomputed at θ_start (the current weights, which produced
    every feature of the group) with the buffers the original forward saw (``buffers_before``
    evolved by batches ``0..t-1``), ∂L/∂uplink is back-propagated to θ_start, and the
    resulting gradient is applied to the live weights with ``optimizer.step()``.
    """
    model = task.model
    model.train()
    named = dict(model.named_parameters())
    stash = {n: p.detach().clone().requires_grad_(p.requires_grad) for n, p in named.items()}
    trainable = [n for n, p in stash.items() if p.requires_grad]
    running = {n: b.detach().clone().to(device) for n, b in buffers_before.items()}
    for b, g in zip(batches, grads):
        torch.manual_seed(b.noise_seed)
        xs = _to_device(task.inputs(b, True), device)
        up = torch.func.functional_call(
            model, {**stash, **running}, xs, {"generator": _generator(b.noise_seed, device)}
        )
        names = sorted(g)
        missing = [n for n in names if n not in up]
        if missing:
            raise ValueError(f"gradients for {missing}, but the client's uplink has {sorted(up)}")
        param_grads = torch.autograd.grad(
            [up[n] for n in names],
            [stash[n] for n in trainable],
            grad_outputs=[g[n].to(device) for n in names],
            allow_unused=True,
        )
        for n, pg in zip(trainable, param_grads):
            named[n].grad = pg
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def buffers_record(model: nn.Module) -> ArrayRecord:
    """The module's buffers (e.g. batch-norm running statistics) as an ArrayRecord."""
    return ArrayRecord(dict(model.named_buffers()))  # type: ignore[arg-type]
