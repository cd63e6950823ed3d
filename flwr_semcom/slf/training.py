"""Training loops of paper 2: transceiver (pre-)training and fine-tuning, classifier training.

Choi et al., arXiv 2310.09394. A transceiver is trained end to end through the K-ary DMC
(eq. 2) with the VQ-VAE loss (eq. 7, :class:`~flwr_semcom.losses.vqvae.VQVAELoss`) and Adam
(Sec. IV); SLF step 2 runs the same loop on the virtual transceiver with some layers frozen.
The frozen task classifier is trained once with cross-entropy on clean images.

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
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from flwr_semcom.channels.dmc import DiscreteMemorylessChannel
from flwr_semcom.guard import check_finite, check_loss
from flwr_semcom.losses.vqvae import VQVAELoss
from flwr_semcom.models.vqvae import VQVAETransceiver

__all__ = [
    "TrainStats",
    "batch_indices",
    "decode_scores",
    "encode_through_channel",
    "train_classifier",
    "train_transceiver",
]


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


def _shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate the whole batch by up to ``max_shift`` pixels (zero padding)."""
    if max_shift == 0:
        return x
    padded = F.pad(x, (max_shift,) * 4)
    i, j = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[..., i : i + x.shape[-2], j : j + x.shape[-1]]


def _channel_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _checked(loss: Tensor, params: list[nn.Parameter], where: str, step: int) -> float:
    """The loss as a float after checking it and the gradients (:class:`NonFiniteError`)."""
    value = check_loss(loss, where=where, step=step)
    grads = {str(i): p.grad for i, p in enumerate(params) if p.grad is not None}
    check_finite(f"gradient at step {step}", grads, where=where, consequence="training stopped")
    return value


def train_transceiver(
    model: VQVAETransceiver,
    images: Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    crossover: float,
    beta: float,
    seed: int,
    init_codebook: bool = False,
) -> TrainStats:
    """Train the parameters of ``model`` that require gradients through a DMC (eq. 2, 7).

    Parameters
    ----------
    model
        The (virtual) transceiver; frozen layers (``requires_grad=False``) stay bit-identical.
    images
        Training images ``[N, C, H, W]`` on the model's device.
    steps, lr, batch_size
        Adam steps, learning rate, images per step.
    crossover
        DMC crossover probability ``p`` during training.
    beta
        Commitment weight of eq. 7.
    seed
        Seeds the batch order, the codebook start and the channel draws.
    init_codebook
        Start the codebook from encoder outputs (:meth:`VQVAETransceiver.init_codebook_from`).

    Returns
    -------
    TrainStats
    """
    device = images.device
    g = torch.Generator().manual_seed(seed)
    g_channel = _channel_generator(device, seed + 1)
    if init_codebook:
        model.init_codebook_from(images[torch.randperm(len(images), generator=g)[:256]], g)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    channel = DiscreteMemorylessChannel(model.codebook_size, crossover)
    loss_fn = VQVAELoss(beta)
    model.train()
    losses: list[float] = []
    flops_per_step = 0
    start = time.perf_counter()
    for step, idx in enumerate(batch_indices(len(images), batch_size, steps, g)):
        x = images[idx.to(device)]
        counter = FlopCounterMode(display=False) if step == 0 else None
        if counter is not None:
            counter.__enter__()
        try:
            loss = loss_fn(model(x, channel, g_channel), x)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            if counter is not None:
                counter.__exit__(None, None, None)
                flops_per_step = int(counter.get_total_flops())
        losses.append(_checked(loss, params, "slf transceiver training", step))
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


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    shift: int,
    seed: int,
) -> TrainStats:
    """Train the task classifier with cross-entropy (Adam) on clean, randomly shifted images."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    params = list(model.parameters())
    for step, idx in enumerate(batch_indices(len(images), batch_size, steps, g)):
        idx = idx.to(images.device)
        logits = model(_shift(images[idx], shift, g))["logits"]
        loss = F.cross_entropy(logits, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        losses.append(_checked(loss, params, "slf classifier training", step))
        opt.step()
    model.eval()
    tail = losses[-20:] or [float("nan")]
    return TrainStats(
        len(losses),
        min(batch_size, len(images)),
        0,
        0,
        time.perf_counter() - start,
        sum(tail) / len(tail),
    )


@torch.no_grad()
def encode_through_channel(
    model: VQVAETransceiver, images: Tensor, crossover: float, seed: int, batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """Transmitter side of step 4: indices of ``images`` and what the DMC delivers.

    Returns
    -------
    tuple of Tensor
        ``(indices, indices_hat)``, both int64 ``[N, h, w]``.
    """
    model.eval()
    channel = DiscreteMemorylessChannel(model.codebook_size, crossover)
    g = _channel_generator(images.device, seed)
    sent, received = [], []
    for start in range(0, len(images), batch_size):
        idx = model.encode(images[start : start + batch_size])
        sent.append(idx)
        received.append(channel(idx, generator=g))
    return torch.cat(sent), torch.cat(received)


@torch.no_grad()
def decode_scores(
    model: VQVAETransceiver,
    classifier: nn.Module,
    indices_hat: Tensor,
    images: Tensor,
    labels: Tensor,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Receiver side of step 4: decode, then score against the sender's originals.

    Returns
    -------
    dict
        ``mse`` (mean squared error per pixel, the reconstruction task's metric) and
        ``accuracy`` (top-1 of the frozen classifier on the reconstructions, in [0, 1]).
    """
    if indices_hat.shape[0] != images.shape[0] or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"got {indices_hat.shape[0]} index maps for {images.shape[0]} images and "
            f"{labels.shape[0]} labels; expected one per image"
        )
    model.eval()
    classifier.eval()
    sq_err, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        sl = slice(start, start + batch_size)
        x_hat = model.decode(indices_hat[sl])
        sq_err += float(((x_hat - images[sl]) ** 2).sum())
        pred = classifier(x_hat)["logits"].argmax(dim=1)
        correct += int((pred == labels[sl]).sum())
    n = images.shape[0]
    return {"mse": sq_err / images[0].numel() / n, "accuracy": correct / n}
