"""Seeded, stratified train/test splits.

Paper 2 (SLF semantics alignment, Choi et al., arXiv 2310.09394, Sec. IV) divides each data
set into training and test parts (ratio lost in conversion; ours is a setting). Offline we
only have the official MNIST and CIFAR-10 *test* sets, so our train/test parts are a seeded
stratified split of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def stratified_split(
    labels: torch.Tensor | np.ndarray | Sequence[int], test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices ``0..N-1`` into train and test parts with the same class proportions.

    Per class with ``n_c`` samples, ``round(n_c * test_fraction)`` go to the test part,
    clamped to ``[1, n_c - 1]`` when ``n_c >= 2`` so that every class with two or more
    samples appears in both parts.

    Parameters
    ----------
    labels
        Integer labels ``[N]``.
    test_fraction
        Share of each class that goes to the test part, in (0, 1).
    seed
        Seed of the shuffle; the same seed gives the same split.

    Returns
    -------
    tuple of torch.Tensor
        ``(train_idx, test_idx)``: sorted, disjoint int64 index tensors whose union is
        ``0..N-1``.
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    y = np.asarray(torch.as_tensor(labels).cpu().numpy()).reshape(-1)
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = int(round(idx.size * float(test_fraction)))
        if idx.size >= 2:
            n_test = min(max(n_test, 1), idx.size - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    empty = np.zeros(0, dtype=np.int64)
    tr = np.sort(np.concatenate(train)) if train else empty
    te = np.sort(np.concatenate(test)) if test else empty
    return torch.from_numpy(tr.astype(np.int64)), torch.from_numpy(te.astype(np.int64))
