"""Generic loops of SLF and FedAvg alignment: train a transceiver through a channel, send
test images through the link, decode and score.

Choi et al., arXiv 2310.09394: a transceiver is trained end to end through its channel
(eq. 2 for the DMC) with its loss (eq. 7 for the VQ-VAE) and Adam (Sec. IV); SLF step 2 runs
the same loop on the virtual transceiver with some layers frozen; step 4 encodes the
transmitter's test images, sends them through the link and scores the receiver's
reconstructions. The loss reads the transceiver's output dict, so any
:class:`~flwr_semcom.alignment.FreezableTransceiver` and any channel module work.

Compute is counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the first step
(forward, backward of what requires gradients); every step has the same shapes (fixed-size
batches), so the total is ``steps x`` that count. The counter sees matrix products and
convolutions (including their backward), not element-wise ops or the optimiser update.

Non-finite guard (issue #9, :mod:`flwr_semcom.guard`): every step checks the loss and the
gradients before the optimiser step; NaN or inf stops the loop with
:class:`~flwr_semcom.guard.NonFiniteError` (the weights are left as they were before the step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from flwr_semcom.alignment.transceiver import FreezableTransceiver, as_module
from flwr_semcom.guard import check_finite, check_loss

__all__ = [
    "InitFn",
    "LossFn",
    "OptimizerFn",
    "TrainStats",
    "batch_indices",
    "checked_loss",
    "decode_scores",
    "fit_transceiver",
    "transmit",
]

#: ``loss(model_output, x) -> {"loss": scalar tensor, ...}`` (e.g. ``VQVAELoss(beta)``).
LossFn = Callable[[Mapping[str, Tensor], Tensor], Mapping[str, Tensor]]
#: ``init(model, images, generator)``: run before training from scratch (e.g. codebook start).
InitFn = Callable[[nn.Module, Tensor, torch.Generator], None]
#: ``optimizer(params, lr)``; Adam (paper 2, Sec. IV) when not given.
OptimizerFn = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]


@dataclass(frozen=True)
class TrainStats:
    """What one training run cost and reached.

    Attributes
    ----------
    steps, batch_size
        Optimiser steps and images per step.
    flops_per_step, flops
        FLOPs counted on one step, and ``steps x flops_per_step``.
    wall_s
        Measured wall time of the loop (this machine).
    last_loss
        Mean loss over the last ``min(20, steps)`` steps.
    """

    steps: int
    batch_size: int
    flops_per_step: int
    flops: int
    wall_s: float
    last_loss: float


def batch_indices(
    n: int, batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[Tensor]:
    """``steps`` index batches of exactly ``min(batch_size, n)`` items, epoch by epoch.

    Each epoch is a fresh permutation; a short remainder at the end of an epoch is skipped
    so that every step has the same shape (and the same FLOP count).
    """
    if n < 1:
        raise ValueError("cannot train on an empty data set (0 images)")
    b = min(batch_size, n)
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - b + 1, b):
            if done == steps:
                return
            yield perm[start : start + b]
            done += 1


def checked_loss(loss: Tensor, params: list[nn.Parameter], where: str, step: int) -> float:
    """The loss as a float after checking it and the gradients (:class:`NonFiniteError`)."""
    value = check_loss(loss, where=where, step=step)
    grads = {str(i): p.grad for i, p in enumerate(params) if p.grad is not None}
    check_finite(f"gradient at step {step}", grads, where=where, consequence="training stopped")
    return value


def _adam(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


def fit_transceiver(
    model: FreezableTransceiver,
    images: Tensor,
    *,
    loss: LossFn,
    channel: nn.Module | None,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    init: InitFn | None = None,
    optimizer: OptimizerFn | None = None,
    where: str = "slf transceiver training",
) -> TrainStats:
    """Train the parameters of ``model`` that require gradients through ``channel``.

    Parameters
    ----------
    model
        The (virtual) transceiver; frozen layers (``requires_grad=False``) stay bit-identical.
    images
        Training images ``[N, ...]`` on the model's device.
    loss
        Reads ``model(x, channel, generator)``'s output dict and ``x``; returns ``"loss"``.
    channel
        The link during training (``forward(y, generator=None)``), or ``None``.
    steps, lr, batch_size
        Optimiser steps, learning rate, images per step.
    seed
        Seeds the batch order (and ``init``) with ``seed`` and the channel draws with
        ``seed + 1``.
    init
        Called as ``init(model, images, generator)`` before the first step (training from
        scratch), with the batch-order generator.
    optimizer
        ``optimizer(params, lr)``; Adam by default.
    where
        Names the loop in a :class:`~flwr_semcom.guard.NonFiniteError`.
    """
    device = images.device
    g = torch.Generator().manual_seed(seed)
    g_channel = torch.Generator(device=device).manual_seed(seed + 1)
    if init is not None:
        init(model, images, g)  # type: ignore[arg-type]
    module = as_module(model)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = (optimizer or _adam)(params, lr)
    module.train()
    losses: list[float] = []
    flops_per_step = 0
    start = time.perf_counter()
    for step, idx in enumerate(batch_indices(len(images), batch_size, steps, g)):
        x = images[idx.to(device)]
        counter = FlopCounterMode(display=False) if step == 0 else None
        if counter is not None:
            counter.__enter__()
        try:
            value = loss(model(x, channel, g_channel), x)["loss"]
            opt.zero_grad(set_to_none=True)
            value.backward()
        finally:
            if counter is not None:
                counter.__exit__(None, None, None)
                flops_per_step = int(counter.get_total_flops())
        losses.append(checked_loss(value, params, where, step))
        opt.step()
    wall = time.perf_counter() - start
    tail = losses[-20:] or [float("nan")]
    return TrainStats(
        steps=len(losses),
        batch_size=min(batch_size, len(images)),
        flops_per_step=flops_per_step,
        flops=flops_per_step * len(losses),
        wall_s=wall,
        last_loss=sum(tail) / len(tail),
    )


@torch.no_grad()
def transmit(
    model: FreezableTransceiver,
    images: Tensor,
    channel: nn.Module,
    seed: int,
    batch_size: int = 1000,
) -> tuple[Tensor, Tensor]:
    """Transmitter side of SLF step 4: ``model.encode`` the images, send through ``channel``.

    Returns
    -------
    tuple of Tensor
        ``(sent, received)``; the channel draws come from a generator seeded with ``seed``
        on the images' device.
    """
    as_module(model).eval()
    g = torch.Generator(device=images.device).manual_seed(seed)
    sent, received = [], []
    for start in range(0, len(images), batch_size):
        y = model.encode(images[start : start + batch_size])
        sent.append(y)
        received.append(channel(y, generator=g))
    return torch.cat(sent), torch.cat(received)


@torch.no_grad()
def decode_scores(
    model: FreezableTransceiver,
    task_model: nn.Module,
    received: Tensor,
    images: Tensor,
    labels: Tensor,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Receiver side of SLF step 4: decode, then score against the sender's originals.

    Returns
    -------
    dict
        ``mse`` (mean squared error per element, the reconstruction task's metric) and
        ``accuracy`` (top-1 of the frozen ``task_model``'s ``"logits"`` on the
        reconstructions, in [0, 1]).
    """
    if received.shape[0] != images.shape[0] or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"got {received.shape[0]} received signals for {images.shape[0]} images and "
            f"{labels.shape[0]} labels; expected one per image"
        )
    as_module(model).eval()
    task_model.eval()
    sq_err, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        sl = slice(start, start + batch_size)
        x_hat = model.decode(received[sl])
        sq_err += float(((x_hat - images[sl]) ** 2).sum())
        pred = task_model(x_hat)["logits"].argmax(dim=1)
        correct += int((pred == labels[sl]).sum())
    n = images.shape[0]
    return {"mse": sq_err / images[0].numel() / n, "accuracy": correct / n}
