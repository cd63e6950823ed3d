"""CIFAR-10 loader (Krizhevsky 2009), optionally as 1x28x28 grayscale for mixing with MNIST.

CIFAR-10 is the second source of paper 2's mixture (SLF semantics alignment, Choi et al.,
arXiv 2310.09394, eq. (8)). Offline, the CIFAR-10 *test* set is available as JPEGs in an
``ImageFolder`` layout (``<data root>/cifar10-test/<class>/<nnnn>.jpg``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2 import functional as TF

from flwr_semcom.data.errors import DataFormatError, DataNotFoundError
from flwr_semcom.data.images import ImageArrays

# Sorted folder names = torchvision's class order = the official CIFAR-10 label order.
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR10_SPLITS = ("test", "train")


def to_grayscale_28(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[N, 3, H, W]`` → uint8 grayscale ``[N, 28, 28]``.

    Luma with the ITU-R 601 weights (0.299, 0.587, 0.114), then an antialiased bilinear
    resize to 28 x 28, the MNIST geometry.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(
            f"expected uint8 RGB images [N, 3, H, W], got {tuple(images.shape)} of {images.dtype}"
        )
    gray = TF.rgb_to_grayscale(images, num_output_channels=1)
    gray = TF.resize(gray, [28, 28], antialias=True)
    return gray[:, 0].contiguous()


def _image_folder(folder: Path, limit_per_class: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        ds = ImageFolder(str(folder), loader=str)
    except FileNotFoundError as exc:
        raise DataFormatError(f"{folder}: no class folders with images ({exc})") from exc
    if ds.classes != CIFAR10_CLASSES:
        raise DataFormatError(
            f"{folder} has class folders {ds.classes}; expected the 10 CIFAR-10 classes "
            f"{CIFAR10_CLASSES}"
        )
    samples = ds.samples
    if limit_per_class is not None:
        counts = [0] * len(CIFAR10_CLASSES)
        kept = []
        for path, label in samples:
            if counts[label] < limit_per_class:
                counts[label] += 1
                kept.append((path, label))
        samples = kept
    images = []
    for path, _ in samples:
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
        if img.shape != (32, 32, 3):
            raise DataFormatError(f"{path} is {img.shape} (H, W, C); expected (32, 32, 3)")
        images.append(img)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    stacked = np.stack(images) if images else np.zeros((0, 32, 32, 3), np.uint8)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous(), labels


def load_cifar10(
    root: str | Path,
    grayscale_28: bool = False,
    split: str = "test",
    download: bool = False,
    limit_per_class: int | None = None,
) -> ImageArrays:
    """Load CIFAR-10 as uint8 images and int64 labels (0-9 in :data:`CIFAR10_CLASSES` order).

    Parameters
    ----------
    root
        The data root. Read, in this order: ``<root>/cifar10-test`` (or
        ``<root>/cifar10-<split>``) as an ``ImageFolder``; ``<root>`` itself when it holds
        the 10 class folders; ``<root>/cifar-10-batches-py`` (torchvision's binary release).
    grayscale_28
        Return ``[N, 28, 28]`` grayscale (see :func:`to_grayscale_28`) instead of
        ``[N, 3, 32, 32]`` RGB, for mixing with MNIST.
    split
        ``"test"`` (10,000 images, available offline) or ``"train"`` (50,000; bring your own).
    download
        Fetch the binary release with ``torchvision.datasets.CIFAR10`` into ``<root>`` first.
        Never done implicitly.
    limit_per_class
        Read only the first ``k`` files of each class folder (sorted names); for quick tests.

    Returns
    -------
    ImageArrays
        ``(images, labels, classes, source)``.
    """
    if split not in CIFAR10_SPLITS:
        raise ValueError(f"CIFAR-10 split must be one of {CIFAR10_SPLITS}, got {split!r}")
    if limit_per_class is not None and limit_per_class < 1:
        raise ValueError(f"limit_per_class must be >= 1 or None, got {limit_per_class}")
    root = Path(root)
    folder = root / f"cifar10-{split}"
    binary = root / "cifar-10-batches-py"
    if download or (not folder.is_dir() and binary.is_dir()):
        from torchvision.datasets import CIFAR10

        ds = CIFAR10(str(root), train=split == "train", download=download)
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(ds.targets, dtype=torch.int64)
        if limit_per_class is not None:
            keep = (
                torch.cat(
                    [torch.nonzero(labels == c).flatten()[:limit_per_class] for c in range(10)]
                )
                .sort()
                .values
            )
            images, labels = images[keep], labels[keep]
    elif folder.is_dir():
        images, labels = _image_folder(folder, limit_per_class)
    elif (root / CIFAR10_CLASSES[0]).is_dir():
        images, labels = _image_folder(root, limit_per_class)
    else:
        raise DataNotFoundError(
            f"CIFAR-10 {split} set not found under {root}: expected {folder}/<class>/*.jpg "
            f"(ImageFolder, classes {', '.join(CIFAR10_CLASSES)}) or {binary}"
        )
    if grayscale_28:
        images = to_grayscale_28(images)
    return ImageArrays(images, labels, list(CIFAR10_CLASSES), f"cifar10-{split}")
