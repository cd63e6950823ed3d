"""Paper 2's task model: a separately trained, frozen image classifier after the decoder.

Choi et al., arXiv 2310.09394, Sec. II ("task effectiveness") and Sec. IV: for the
classification task the receiver feeds the reconstruction ``x_hat`` to a pre-trained
classifier made of consecutive convolution layers, each followed by a max-pooling layer,
then linear layers. It is trained once on clean images (MNIST, or MNIST + CIFAR-10 for the
source-dissimilarity case) and stays frozen during SLF: it adds no term to the loss (eq. 7).
Widths are ours (the paper's were lost).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flwr_semcom.models import MODELS
from flwr_semcom.models.utils import check_image_batch, check_positive_int

__all__ = ["ConvClassifier"]


@MODELS.register("slf_classifier")
class ConvClassifier(nn.Module):
    """Conv(3x3) + ReLU + MaxPool(2) blocks, then ``Linear-ReLU-Linear`` → ``{"logits"}``.

    Parameters
    ----------
    num_classes
        Output classes (10 for MNIST, 20 for the MNIST / CIFAR-10 mixture).
    in_channels
        Image channels.
    channels
        Output channels of the convolution blocks; each block halves the image side.
    hidden
        Width of the hidden linear layer.
    image_size
        Input side in pixels (28); must be divisible by ``2 ** len(channels)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("hidden", hidden),
            ("image_size", image_size),
        ):
            check_positive_int(name, value)
        widths = tuple(channels)
        if not widths:
            raise ValueError("channels must list at least one convolution width, got []")
        for c in widths:
            check_positive_int("channels", c)
        side = image_size
        blocks: list[nn.Module] = []
        prev = in_channels
        for c in widths:
            if side % 2:
                raise ValueError(
                    f"image_size {image_size} must be divisible by 2 ** len(channels) = "
                    f"{2 ** len(widths)} (one max-pool per block)"
                )
            blocks += [nn.Conv2d(prev, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            prev, side = c, side // 2
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prev * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class scores ``{"logits": [B, num_classes]}`` for images ``[B, C, H, W]``."""
        check_image_batch(x, self.in_channels)
        return {"logits": self.head(self.features(x))}
