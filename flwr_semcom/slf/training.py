"""Paper 2's training recipes: the VQ-VAE transceiver through the DMC, the task classifier.

Choi et al., arXiv 2310.09394. A transceiver is trained end to end through the K-ary DMC
(eq. 2) with the VQ-VAE loss (eq. 7, :class:`~flwr_semcom.losses.vqvae.VQVAELoss`) and Adam
(Sec. IV) by the generic loop :func:`flwr_semcom.alignment.fit_transceiver`; SLF step 2 runs
the same loop on the virtual transceiver with some layers frozen. The frozen task classifier
is trained once with cross-entropy on clean, randomly shifted images.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flwr_semcom.alignment.loops import TrainStats, batch_indices, checked_loss, fit_transceiver
from flwr_semcom.alignment.transceiver import FreezableTransceiver
from flwr_semcom.channels.dmc import DiscreteMemorylessChannel
from flwr_semcom.losses.vqvae import VQVAELoss
from flwr_semcom.models.vqvae import VQVAETransceiver

__all__ = [
    "bits_per_index",
    "dmc_of",
    "codebook_from_images",
    "train_classifier",
    "train_transceiver",
]

#: Images whose encoder outputs seed the codebook before training from scratch.
CODEBOOK_INIT_IMAGES = 256


def codebook_from_images(model: nn.Module, images: Tensor, generator: torch.Generator) -> None:
    """Codewords = encoder outputs of 256 random training images (our data-dependent start)."""
    if not isinstance(model, VQVAETransceiver):
        raise TypeError(
            f"codebook_from_images needs a VQVAETransceiver, got {type(model).__name__}"
        )
    pick = torch.randperm(len(images), generator=generator)[:CODEBOOK_INIT_IMAGES]
    model.init_codebook_from(images[pick], generator)


def dmc_of(model: FreezableTransceiver, crossover: float) -> DiscreteMemorylessChannel:
    """The eq. 2 DMC over ``model``'s codeword indices with crossover ``p``."""
    if not isinstance(model, VQVAETransceiver):
        raise TypeError(f"the DMC link needs a VQVAETransceiver, got {type(model).__name__}")
    return DiscreteMemorylessChannel(model.codebook_size, crossover)


def bits_per_index(model: FreezableTransceiver) -> int:
    """Bits of one codeword index: ``ceil(log2 K)``."""
    if not isinstance(model, VQVAETransceiver):
        raise TypeError(f"bits_per_index needs a VQVAETransceiver, got {type(model).__name__}")
    return math.ceil(math.log2(model.codebook_size))


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
    """Train ``model`` through a DMC with crossover ``p`` and the eq. 7 loss (Adam).

    Parameters
    ----------
    init_codebook
        Start the codebook from encoder outputs (:func:`codebook_from_images`), as before training
        from scratch.

    See :func:`flwr_semcom.alignment.fit_transceiver` for the others.
    """
    return fit_transceiver(
        model,
        images,
        loss=VQVAELoss(beta),
        channel=dmc_of(model, crossover),
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        init=codebook_from_images if init_codebook else None,
    )


def _shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate the whole batch by up to ``max_shift`` pixels (zero padding)."""
    if max_shift == 0:
        return x
    padded = F.pad(x, (max_shift,) * 4)
    i, j = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[..., i : i + x.shape[-2], j : j + x.shape[-1]]


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
        losses.append(checked_loss(loss, params, "slf classifier training", step))
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
