"""Batch plans of a split-learning pass: sample IDs and seeds, grouped S per message.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. III-B: in Stage II every device sends its noisy
features ẑ^m of the *same* scenes and the server back-propagates through g. The server decides
which scenes form each batch (it holds the labels), so a batch is fully described by a
:class:`BatchPlan`: the aligned sample IDs, the seed of the input augmentation (shared by every
modality, so the views stay paired) and the seed of the channel noise (one per device). The
Flower run and the in-process reference (:mod:`flwr_semcom.split.reference`) both take their
batches from :func:`train_batches` / :func:`eval_batches`, so they see identical data.

Seeds come from :func:`derive_seed`: a stable hash of ``(cfg.seed, stream name, indices)``
(``numpy.random.SeedSequence``), the same in every process and on every platform.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "BatchPlan",
    "client_plans",
    "derive_seed",
    "eval_batches",
    "group",
    "train_batches",
]

_SEED_MAX = 2**63 - 1


def derive_seed(*parts: int | str) -> int:
    """Return a seed in ``[0, 2**63)`` derived from ``parts`` (ints >= 0 or strings).

    The same parts give the same seed in every process; a different part gives an
    independent stream. Strings are hashed with CRC-32.
    """
    entropy: list[int] = []
    for p in parts:
        if isinstance(p, str):
            entropy.append(zlib.crc32(p.encode("utf-8")))
        elif isinstance(p, (int, np.integer)) and not isinstance(p, bool) and p >= 0:
            entropy.append(int(p))
        else:
            raise ValueError(f"seed parts must be ints >= 0 or strings, got {p!r}")
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)
    return int(state[0]) & _SEED_MAX


@dataclass(frozen=True)
class BatchPlan:
    """One batch of a pass, as one client sees it.

    Attributes
    ----------
    index
        Position of the batch in its pass (0-based).
    ids
        int64 ``[B]`` sample IDs (aligned across modalities).
    aug_seed
        Seed of the input augmentation (the same for every client of the batch).
    noise_seed
        Seed of this client's channel noise for this batch.
    """

    index: int
    ids: torch.Tensor
    aug_seed: int
    noise_seed: int

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])


def _as_ids(ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
    t = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
    return t


def train_batches(
    ids: torch.Tensor | Sequence[int],
    batch_size: int,
    *,
    seed: int,
    round_: int,
    stage: str = "finetune",
    drop_last: bool = False,
) -> list[BatchPlan]:
    """Shuffle ``ids`` for pass ``round_`` and cut them into batches (noise seeds unset).

    The permutation is ``torch.randperm`` with a generator seeded by
    ``derive_seed(seed, "perm", stage, round_)``; batch ``i`` gets the augmentation seed
    ``derive_seed(seed, "aug", stage, round_, i)``. A last batch of a single sample is always
    dropped (batch norm cannot train on one sample); with ``drop_last`` every short last batch
    is. ``noise_seed`` is 0 here: :func:`client_plans` sets it per client.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    all_ids = _as_ids(ids)
    g = torch.Generator().manual_seed(derive_seed(seed, "perm", stage, round_))
    order = all_ids[torch.randperm(all_ids.shape[0], generator=g)]
    out: list[BatchPlan] = []
    for i, start in enumerate(range(0, order.shape[0], batch_size)):
        chunk = order[start : start + batch_size]
        if chunk.shape[0] < batch_size and (drop_last or chunk.shape[0] < 2):
            break
        out.append(BatchPlan(i, chunk.clone(), derive_seed(seed, "aug", stage, round_, i), 0))
    return out


def eval_batches(ids: torch.Tensor | Sequence[int], batch_size: int) -> list[BatchPlan]:
    """Cut ``ids`` in their given order into evaluation batches (no augmentation, seeds 0)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    all_ids = _as_ids(ids)
    return [
        BatchPlan(i, all_ids[s : s + batch_size].clone(), 0, 0)
        for i, s in enumerate(range(0, all_ids.shape[0], batch_size))
    ]


def client_plans(
    batches: Sequence[BatchPlan], client: int, *, seed: int, stage: str, round_: int
) -> list[BatchPlan]:
    """The batches as client ``client`` sees them: with its own channel-noise seeds.

    ``noise_seed = derive_seed(seed, "noise", stage, round_, batch.index, client)``. For
    ``stage == "eval"`` pass ``round_ = 0`` to evaluate every round under the same noise.
    """
    return [
        BatchPlan(
            b.index, b.ids, b.aug_seed, derive_seed(seed, "noise", stage, round_, b.index, client)
        )
        for b in batches
    ]


def group(items: Sequence[BatchPlan], size: int) -> list[list[BatchPlan]]:
    """Consecutive groups of ``size`` batches (the last may be shorter): one group per message."""
    if size < 1:
        raise ValueError(f"steps per message must be >= 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
