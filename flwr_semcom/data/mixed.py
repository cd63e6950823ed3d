"""The MNIST / CIFAR-10 source mixture of paper 2, eq. (8).

SLF semantics alignment (Choi et al., arXiv 2310.09394), Sec. IV, "Impact of source data
dissimilarity": transceiver T3 is trained on data where each sample comes from MNIST with
probability 1 − ε and from CIFAR-10 with probability ε (ε = data dissimilarity), and the
frozen classifier is trained on both data sets.

Label space (ours; the paper does not say): 20 classes. An MNIST digit ``d`` keeps label
``d`` (0-9); a CIFAR-10 class ``c`` gets label ``10 + c`` (10-19, in
:data:`~flwr_semcom.data.cifar.CIFAR10_CLASSES` order). Items also carry ``"source"``
(0 = MNIST, 1 = CIFAR-10); ``label % 10`` is the label inside the source.
"""

from __future__ import annotations

import numpy as np
import torch

from flwr_semcom.data.cifar import CIFAR10_CLASSES
from flwr_semcom.data.images import MNIST_CLASSES, SOURCE_CIFAR10, SOURCE_MNIST, ImageDataset

MIXED_NUM_CLASSES = 20
CIFAR_LABEL_OFFSET = 10


class MixedSource(ImageDataset):
    """Samples from MNIST with probability ``1 − epsilon``, else from CIFAR-10 (eq. 8).

    Each of the ``num_samples`` samples independently draws its source (Bernoulli(ε) for
    CIFAR-10); within a source, samples are drawn without replacement (a seeded
    permutation), so no image appears twice.

    Parameters
    ----------
    epsilon
        Data dissimilarity ε in [0, 1]: the probability that a sample is a CIFAR-10 image.
    mnist
        MNIST as an :class:`ImageDataset` with images ``[N, 1, 28, 28]`` and labels 0-9.
    cifar
        CIFAR-10 as grayscale 28 x 28 (load with ``load_cifar10(root, grayscale_28=True)``),
        labels 0-9.
    seed
        Seed of the source draws and of the within-source permutations.
    num_samples
        Size of the mixture; default ``min(len(mnist), len(cifar))``, which is always
        feasible. A size that needs more images of one source than it has raises.

    Attributes
    ----------
    images, labels, sources
        Tensors ``[N, 1, 28, 28]`` float in [0, 1], ``[N]`` int64 in 0-19, ``[N]`` int64
        (0 = MNIST, 1 = CIFAR-10).
    origin
        ``[N]`` int64: the index of each sample in its source dataset.
    """

    def __init__(
        self,
        epsilon: float,
        mnist: ImageDataset,
        cifar: ImageDataset,
        seed: int = 0,
        num_samples: int | None = None,
    ) -> None:
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon (data dissimilarity) must be in [0, 1], got {epsilon}")
        for name, ds in (("mnist", mnist), ("cifar", cifar)):
            if tuple(ds.images.shape[1:]) != (1, 28, 28):
                raise ValueError(
                    f"{name} images must be [N, 1, 28, 28], got {tuple(ds.images.shape)}"
                    + (
                        "; load with load_cifar10(root, grayscale_28=True)"
                        if name == "cifar"
                        else ""
                    )
                )
            if len(ds) and int(ds.labels.max()) > 9:
                raise ValueError(f"{name} labels must be 0-9, got max {int(ds.labels.max())}")
        if num_samples is None:
            num_samples = min(len(mnist), len(cifar))
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        rng = np.random.default_rng(seed)
        is_cifar = rng.random(num_samples) < float(epsilon)
        n_cifar = int(is_cifar.sum())
        n_mnist = num_samples - n_cifar
        if n_cifar > len(cifar) or n_mnist > len(mnist):
            raise ValueError(
                f"num_samples={num_samples} at epsilon={epsilon} draws {n_mnist} MNIST and "
                f"{n_cifar} CIFAR-10 images but only {len(mnist)} and {len(cifar)} are given; "
                "expected num_samples <= the smaller source"
            )
        origin = np.empty(num_samples, dtype=np.int64)
        origin[~is_cifar] = rng.permutation(len(mnist))[:n_mnist]
        origin[is_cifar] = rng.permutation(len(cifar))[:n_cifar]
        origin_t = torch.from_numpy(origin)
        mask = torch.from_numpy(is_cifar)
        images = torch.empty((num_samples, 1, 28, 28), dtype=torch.float32)
        labels = torch.empty(num_samples, dtype=torch.int64)
        images[~mask] = mnist.images[origin_t[~mask]]
        labels[~mask] = mnist.labels[origin_t[~mask]]
        images[mask] = cifar.images[origin_t[mask]]
        labels[mask] = cifar.labels[origin_t[mask]] + CIFAR_LABEL_OFFSET
        sources = torch.where(mask, SOURCE_CIFAR10, SOURCE_MNIST).to(torch.int64)
        classes = [f"mnist:{c}" for c in MNIST_CLASSES] + [f"cifar10:{c}" for c in CIFAR10_CLASSES]
        super().__init__(
            images, labels, classes=classes, sources=sources, name=f"mixed-eps{float(epsilon):g}"
        )
        self.epsilon = float(epsilon)
        self.origin = origin_t
