"""The data of the multi-task experiment and the devices' horizontal shards.

Paper 3 (arXiv 2501.02006) evaluates on CityScapes, NYUv2, Taskonomy, Oxford-IIIT Pet and
MVSA; offline we have two stand-ins (``multitask.dataset``):

- ``synthetic_rgbd`` (embedded, default): :class:`~flwr_semcom.data.SyntheticRGBD` scenes;
  the transmitter sees the RGB image only, the tasks are scene classification (10 classes)
  and the scene's depth map (NYUv2-like "depth from RGB"). The object's distance is a
  depth-only factor, so neither task is solvable perfectly from RGB (best accuracy 60 %).
- ``cifar10``: the CIFAR-10 test JPEGs in ``../shared/data`` (``multitask.cifar_per_class``
  per class), tasks classification and reconstruction.

Both are split into train / test parts by a seeded stratified split, and a seeded stratified
validation part (``val_fraction`` of the training part; none with 0) is held out of the
training part; device ``d`` of ``D`` holds the ``d``-th IID shard
(:func:`~flwr_semcom.data.iid_partition`) of each part, so the devices' test (validation)
shards together are the whole test (validation) part. Loaded tensors are memoised per
process (read-only data, not node state). Both functions take a typed
:class:`~flwr_semcom.multitask.spec.DataSpec`.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from flwr_semcom.data import SyntheticRGBD, iid_partition, load_cifar10, stratified_split
from flwr_semcom.multitask.spec import DataSpec

__all__ = ["Batch", "device_data", "full_data"]

#: A batch: ``{"image": [B, 3, H, W] in [0, 1], "label": [B], "depth": [B, 1, H, W]}``.
Batch = dict[str, torch.Tensor]
PARTS = ("train", "test", "val")
#: Offset of the validation split's seed from the data seed.
VAL_SEED_OFFSET = 101


@lru_cache(maxsize=4)
def _load(
    dataset: str, num_samples: int, per_class: int, root: str, seed: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    if dataset == "synthetic_rgbd":
        ds = SyntheticRGBD(num_samples=num_samples, image_size=32, seed=seed)
        return {"image": ds.rgb, "depth": ds.depth, "label": ds.labels}, ds.labels
    arrays = load_cifar10(root, limit_per_class=per_class)
    images = arrays.images.float().div_(255.0)
    return {"image": images, "label": arrays.labels}, arrays.labels


def full_data(spec: DataSpec, part: str) -> Batch:
    """The whole ``train``, ``val`` (needs ``val_fraction`` > 0) or ``test`` part as tensors."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if part == "val" and not spec.val_fraction:
        raise ValueError("part 'val' needs multitask.val_fraction > 0 (no validation part)")
    root = spec.data_root if spec.dataset == "cifar10" else ""
    tensors, labels = _load(spec.dataset, spec.num_samples, spec.cifar_per_class, root, spec.seed)
    train_idx, test_idx = stratified_split(labels, spec.test_fraction, spec.seed)
    if part != "test" and spec.val_fraction:
        tr, va = stratified_split(
            torch.as_tensor(labels)[train_idx], spec.val_fraction, spec.seed + VAL_SEED_OFFSET
        )
        train_idx = train_idx[va] if part == "val" else train_idx[tr]
    idx = test_idx if part == "test" else train_idx
    return {k: v[idx] for k, v in tensors.items()}


def device_data(spec: DataSpec, partition_id: int, num_partitions: int, part: str) -> Batch:
    """Device ``partition_id``'s IID shard of the ``part`` part."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id must be in [0, {num_partitions}), got {partition_id}")
    data = full_data(spec, part)
    n = int(data["label"].shape[0])
    shard = iid_partition(n, num_partitions, spec.seed + PARTS.index(part))[partition_id]
    return {k: v[shard] for k, v in data.items()}
