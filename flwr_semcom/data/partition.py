"""Partitioning of sample IDs across devices and clients.

- Vertical (per modality), paper 1 (multi-modal SSL semcom, Zhao et al., arXiv 2503.13940,
  Sec. II): device m observes modality m of the *same* scenes, so every modality's device k
  holds the same shard k of sample IDs; :func:`ids_fingerprint` / :func:`check_alignment`
  let the server verify that alignment without seeing the IDs.
- Horizontal (per client): IID (:func:`iid_partition`) and label-skewed Dirichlet
  (:func:`dirichlet_partition`, the usual Dir(α) label-skew protocol; smaller α = more skew).
- Label scarcity, paper 1 Fig. 5 (50 % labels): :func:`label_fraction_subset` keeps a seeded,
  stratified share of labelled IDs; the rest stay usable for label-free pretraining.

All functions are deterministic from their ``seed`` and return sorted int64 tensors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

IdsLike = torch.Tensor | np.ndarray | Sequence[int]


def _ids_array(ids: IdsLike, name: str) -> np.ndarray:
    arr = np.asarray(ids.cpu().numpy() if isinstance(ids, torch.Tensor) else ids).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _sorted_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.sort(a).astype(np.int64))


@dataclass(frozen=True)
class DeviceShard:
    """One device of a vertical partition: its name, modality, shard number and sample IDs."""

    device: str
    modality: str
    shard: int
    ids: torch.Tensor

    @property
    def fingerprint(self) -> str:
        return ids_fingerprint(self.ids)


def vertical_partition(
    sample_ids: IdsLike | int,
    modalities: Sequence[str],
    devices_per_modality: int,
    seed: int,
) -> list[DeviceShard]:
    """Split sample IDs into aligned per-modality shards.

    The IDs are shuffled (seeded) and cut into ``devices_per_modality`` disjoint shards of
    near-equal size; device ``k`` of every modality holds shard ``k``, so devices of
    different modalities with the same ``k`` see the same scenes.

    Parameters
    ----------
    sample_ids
        Unique sample IDs, or ``N`` for ``0..N-1``.
    modalities
        Distinct modality names, e.g. ``["rgb", "depth"]``.
    devices_per_modality
        Number of devices (shards) per modality, in ``[1, len(sample_ids)]``.
    seed
        Seed of the shuffle.

    Returns
    -------
    list of DeviceShard
        Ordered by shard then modality; device names are ``"<modality>-<k>"``.
    """
    ids = _ids_array(
        np.arange(sample_ids) if isinstance(sample_ids, int) else sample_ids, "sample_ids"
    )
    if len(modalities) == 0 or len(set(modalities)) != len(modalities):
        raise ValueError(
            f"modalities must be a non-empty list of distinct names, got {list(modalities)}"
        )
    if np.unique(ids).size != ids.size:
        raise ValueError("sample_ids must be unique; got duplicates")
    if not 1 <= devices_per_modality <= ids.size:
        raise ValueError(
            f"devices_per_modality must be in [1, {ids.size}] (the number of samples), "
            f"got {devices_per_modality}"
        )
    perm = np.random.default_rng(seed).permutation(ids)
    shards = np.array_split(perm, devices_per_modality)
    return [
        DeviceShard(f"{m}-{k}", m, k, _sorted_tensor(shard))
        for k, shard in enumerate(shards)
        for m in modalities
    ]


def ids_fingerprint(ids: IdsLike) -> str:
    """SHA-256 hex digest of the sorted IDs as little-endian int64 bytes (order-insensitive)."""
    arr = np.sort(_ids_array(ids, "ids")).astype("<i8")
    return hashlib.sha256(arr.tobytes()).hexdigest()


def check_alignment(fingerprints: Mapping[str, str]) -> None:
    """Check that devices meant to share one shard hold the same IDs.

    Parameters
    ----------
    fingerprints
        ``{device: ids_fingerprint(ids)}`` for the devices of one shard (e.g. ``rgb-0`` and
        ``depth-0``).

    Raises
    ------
    ValueError
        One line naming the devices in each group of equal fingerprints.
    """
    groups: dict[str, list[str]] = {}
    for device, fp in fingerprints.items():
        groups.setdefault(fp, []).append(str(device))
    if len(groups) > 1:
        parts = "; ".join(
            f"{', '.join(sorted(devs))} hold {fp[:12]}" for fp, devs in sorted(groups.items())
        )
        raise ValueError(
            f"sample IDs are not aligned across devices: {parts}; expected every device of a "
            "shard to hold the same IDs (one vertical_partition of the aligned scenes)"
        )


def iid_partition(n_or_ids: int | IdsLike, num_partitions: int, seed: int) -> list[torch.Tensor]:
    """Shuffle IDs (seeded) and cut them into ``num_partitions`` near-equal disjoint parts.

    ``n_or_ids`` is ``N`` (IDs ``0..N-1``) or the IDs. ``num_partitions`` must lie in
    ``[1, N]``. Each part is returned sorted; every ID is in exactly one part.
    """
    ids = _ids_array(np.arange(n_or_ids) if isinstance(n_or_ids, int) else n_or_ids, "ids")
    if not 1 <= num_partitions <= ids.size:
        raise ValueError(f"num_partitions must be in [1, {ids.size}], got {num_partitions}")
    perm = np.random.default_rng(seed).permutation(ids)
    return [_sorted_tensor(p) for p in np.array_split(perm, num_partitions)]


def dirichlet_partition(
    labels: IdsLike,
    num_partitions: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
    max_retries: int = 100,
) -> list[torch.Tensor]:
    """Label-skewed partition: per class, shares over partitions drawn from Dir(α·1).

    For each class, its shuffled indices are cut at the cumulative shares of a
    ``Dirichlet(alpha, ..., alpha)`` draw over the partitions. The whole draw is repeated
    (same generator, so still deterministic) until every partition holds ``min_size``
    samples. Small ``alpha`` (e.g. 0.1) gives few classes per partition; large ``alpha``
    approaches IID.

    Parameters
    ----------
    labels
        Integer labels ``[N]``; the returned IDs are positions ``0..N-1``.
    num_partitions
        Number of partitions, in ``[1, N]``.
    alpha
        Concentration > 0.
    seed
        Seed of the generator.
    min_size
        Minimum partition size, in ``[0, N // num_partitions]``.
    max_retries
        Redraws before giving up with a ``ValueError``.

    Returns
    -------
    list of torch.Tensor
        Sorted, disjoint int64 position tensors covering ``0..N-1``.
    """
    y = _ids_array(labels, "labels")
    n = y.size
    if not 1 <= num_partitions <= max(n, 1):
        raise ValueError(f"num_partitions must be in [1, {n}], got {num_partitions}")
    if not alpha > 0:
        raise ValueError(f"alpha (Dirichlet concentration) must be > 0, got {alpha}")
    if not 0 <= min_size <= n // num_partitions:
        raise ValueError(
            f"min_size must be in [0, {n // num_partitions}] for {n} samples in "
            f"{num_partitions} partitions, got {min_size}"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(max_retries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(num_partitions, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * idx.size).round().astype(int)
            for p, chunk in enumerate(np.split(idx, cuts)):
                parts[p].append(chunk)
        merged = [np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts]
        if min(m.size for m in merged) >= min_size:
            return [_sorted_tensor(m) for m in merged]
    raise ValueError(
        f"dirichlet_partition found no draw with min_size={min_size} in {max_retries} tries "
        f"(alpha={alpha}, {num_partitions} partitions); lower min_size or raise alpha"
    )


def label_fraction_subset(
    labels: IdsLike, fraction: float, seed: int, ids: IdsLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified subset of labelled samples (paper 1, Fig. 5: 50 % labels).

    Per class with ``n_c`` samples, ``round(n_c * fraction)`` are kept labelled (at least
    one per class). The rest stay usable, without labels, for label-free pretraining.

    Parameters
    ----------
    labels
        Integer labels ``[N]`` of the samples.
    fraction
        The ``label_fraction`` setting, in (0, 1]; 1 keeps every label.
    seed
        Seed of the per-class shuffle.
    ids
        Optional sample IDs ``[N]`` aligned with ``labels``; returned instead of positions.

    Returns
    -------
    tuple of torch.Tensor
        ``(labelled, unlabelled)``: sorted, disjoint, together all IDs (or positions).
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    y = _ids_array(labels, "labels")
    keys = np.arange(y.size) if ids is None else _ids_array(ids, "ids")
    if keys.size != y.size:
        raise ValueError(f"ids has {keys.size} entries; expected {y.size} (one per label)")
    rng = np.random.default_rng(seed)
    keep = np.zeros(y.size, dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, int(round(idx.size * float(fraction))))
        keep[idx[:k]] = True
    return _sorted_tensor(keys[keep]), _sorted_tensor(keys[~keep])
