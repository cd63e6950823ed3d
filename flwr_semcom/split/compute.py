"""The computation of a ``train.split_step``: forward the planned batches, and replay them to
apply the server's gradients (docs/split.md, "The S schedule").

An autograd graph cannot survive between Flower messages, so the gradients ∂L/∂uplink of a
group of batches are applied by recomputing each batch's forward at the weights that produced
its features (θ_start) with :func:`torch.func.functional_call` on copies of the weights and
buffers: batch-norm running statistics are updated exactly once per batch (by the forward),
and the copies of the buffers replay the values the original forward saw.

``schedule="replay"`` (docs/schedules.md) instead back-propagates each batch's gradient through a
forward at the *live* weights θ_{t-1} (features replay, Huo et al. 2018), corrects the
gradient for the features' drift since they were sent (feature-space delay compensation, after
Zheng et al. 2017) and lets that forward update the batch-norm statistics, as S = 1 would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from flwr.app import ArrayRecord
from torch import nn

from flwr_semcom.split.schedule import BatchPlan
from flwr_semcom.split.tasks import ClientTask

__all__ = ["SCHEDULES", "apply_gradients", "buffers_record", "forward_batches"]

#: Client-step schedules of a group of S batches (docs/split.md, docs/schedules.md).
SCHEDULES = ("exact", "replay")


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
    *,
    schedule: str = "exact",
    compensation: float = 0.0,
) -> None:
    """One optimizer step per batch with the server's gradients of the group ``batches``.

    ``exact``: for batch ``t`` the forward is recomputed at θ_start (the current weights, which
    produced every feature of the group) with the buffers the original forward saw
    (``buffers_before`` evolved by batches ``0..t-1``), ∂L/∂uplink is back-propagated to
    θ_start, and the resulting gradient is applied to the live weights with
    ``optimizer.step()``.

    ``replay``: the live buffers are reset to ``buffers_before``; for batch ``t`` the forward
    runs at the live weights θ_{t-1} (updating the batch-norm statistics once, as the forward
    of S = 1 would), and ``g_t + compensation / B_t · (ẑ_t(θ_{t-1}) - ẑ_t(θ_start))`` is
    back-propagated through it (``ẑ_t(θ_start)``, the features that were sent, is recomputed
    on copies; ``B_t`` is the batch's size). For the first batch of a group both schedules
    take the same step. A group of two or more batches then sets the running statistics to
    their average over the group's batches at the final weights (PreciseBN), so that they
    match the weights the next evaluation uses; S = 1 is ``exact``.
    """
    if schedule == "replay":
        _apply_replay(task, optimizer, batches, grads, buffers_before, device, compensation)
        return
    if schedule != "exact":
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
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
        names = _check_names(g, up)
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


def _check_names(g: Mapping[str, torch.Tensor], up: Mapping[str, torch.Tensor]) -> list[str]:
    names = sorted(g)
    missing = [n for n in names if n not in up]
    if missing:
        raise ValueError(f"gradients for {missing}, but the client's uplink has {sorted(up)}")
    return names


def _apply_replay(
    task: ClientTask,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[BatchPlan],
    grads: Sequence[Mapping[str, torch.Tensor]],
    buffers_before: Mapping[str, torch.Tensor],
    device: torch.device,
    compensation: float,
) -> None:
    """The ``replay`` schedule of :func:`apply_gradients`."""
    model = task.model
    model.train()
    named = dict(model.named_parameters())
    trainable = [n for n, p in named.items() if p.requires_grad]
    with torch.no_grad():
        for n, buf in model.named_buffers():
            buf.copy_(buffers_before[n])
    stash = {n: p.detach().clone() for n, p in named.items()} if compensation else {}
    running = {n: b.detach().clone().to(device) for n, b in buffers_before.items()}
    for t, (b, g) in enumerate(zip(batches, grads)):
        torch.manual_seed(b.noise_seed)
        xs = _to_device(task.inputs(b, True), device)
        up = model(*xs, generator=_generator(b.noise_seed, device))
        names = _check_names(g, up)
        out = [g[n].to(device) for n in names]
        if compensation and t > 0:
            with torch.no_grad():
                torch.manual_seed(b.noise_seed)
                sent = torch.func.functional_call(
                    model, {**stash, **running}, xs, {"generator": _generator(b.noise_seed, device)}
                )
            scale = float(compensation) / b.size
            out = [o + scale * (up[n].detach() - sent[n]) for o, n in zip(out, names)]
        params = [named[n] for n in trainable]
        param_grads = torch.autograd.grad(
            [up[n] for n in names], params, grad_outputs=out, allow_unused=True
        )
        for n, pg in zip(trainable, param_grads):
            named[n].grad = pg
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if len(batches) >= 2:
        _precise_statistics(task, batches, device)


def _precise_statistics(
    task: ClientTask, batches: Sequence[BatchPlan], device: torch.device
) -> None:
    """Batch-norm running statistics := the average over ``batches`` of their batch
    statistics at the current weights (PreciseBN, Wu and Johnson 2021); the batch counters
    keep their values."""
    model = task.model
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return
    kept = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
        for m in norms
    ]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    with torch.no_grad():
        for b in batches:
            torch.manual_seed(b.noise_seed)
            xs = _to_device(task.inputs(b, True), device)
            model(*xs, generator=_generator(b.noise_seed, device))
    for m, (momentum, count) in zip(norms, kept):
        m.momentum = momentum
        if count is not None and m.num_batches_tracked is not None:
            m.num_batches_tracked.copy_(count)


def buffers_record(model: nn.Module) -> ArrayRecord:
    """The module's buffers (e.g. batch-norm running statistics) as an ArrayRecord."""
    return ArrayRecord(dict(model.named_buffers()))  # type: ignore[arg-type]
