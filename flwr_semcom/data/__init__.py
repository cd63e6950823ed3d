"""Data layer: tensor-backed datasets, loaders and partitioning helpers.

- Paper 2 (SLF semantics alignment, arXiv 2310.09394, Sec. IV, eq. 8): MNIST
  (:func:`load_mnist`, :func:`load_mnist_any`), CIFAR-10 (:func:`load_cifar10`) and their
  mixture (:class:`MixedSource`), with seeded stratified splits (:func:`stratified_split`).
- Paper 1 (multi-modal SSL semcom, arXiv 2503.13940, Sec. IV-A): RGB-D scenes, the embedded
  :class:`SyntheticRGBD` default and the real :class:`NYUDepthV2`.
- Partitioning for vertical (per modality) and horizontal federated / split learning.

See ``docs/datasets.md`` for provenance, licences, label spaces and split conventions.
"""

from flwr_semcom.data.cifar import CIFAR10_CLASSES, load_cifar10, to_grayscale_28
from flwr_semcom.data.errors import DataFormatError, DataNotFoundError
from flwr_semcom.data.idx import MNIST_IMAGES_MAGIC, MNIST_LABELS_MAGIC, read_idx
from flwr_semcom.data.images import MNIST_CLASSES, SOURCE_NAMES, ImageArrays, ImageDataset
from flwr_semcom.data.mixed import MIXED_NUM_CLASSES, MixedSource
from flwr_semcom.data.mnist import find_mnist_files, load_mnist, load_mnist_any
from flwr_semcom.data.nyu import NYU_CLASSES, NYUDepthV2
from flwr_semcom.data.partition import (
    DeviceShard,
    check_alignment,
    dirichlet_partition,
    ids_fingerprint,
    iid_partition,
    label_fraction_subset,
    vertical_partition,
)
from flwr_semcom.data.root import resolve_data_root
from flwr_semcom.data.splits import stratified_split
from flwr_semcom.data.synthetic_rgbd import SyntheticRGBD

__all__ = [
    "CIFAR10_CLASSES",
    "MIXED_NUM_CLASSES",
    "MNIST_CLASSES",
    "MNIST_IMAGES_MAGIC",
    "MNIST_LABELS_MAGIC",
    "SOURCE_NAMES",
    "DataFormatError",
    "DataNotFoundError",
    "DeviceShard",
    "ImageArrays",
    "ImageDataset",
    "MixedSource",
    "NYUDepthV2",
    "NYU_CLASSES",
    "SyntheticRGBD",
    "check_alignment",
    "dirichlet_partition",
    "find_mnist_files",
    "ids_fingerprint",
    "iid_partition",
    "label_fraction_subset",
    "load_cifar10",
    "load_mnist",
    "load_mnist_any",
    "read_idx",
    "resolve_data_root",
    "stratified_split",
    "to_grayscale_28",
    "vertical_partition",
]
