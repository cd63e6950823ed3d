"""ResNet-style block encoder whose every residual block output is a GAI graph node.

Paper 3 (multi-task semcom with graph-attention inter-block correlation, arXiv 2501.02006),
Sec. III-A: the shared encoder is a ResNet whose ``N`` residual block outputs
``F_1, …, F_N`` (``N = 8`` for ResNet-18) are the nodes of the GAI graph.
:class:`BlockEncoder` is a ResNet with four stages of ``blocks_per_stage`` torchvision
``BasicBlock`` s (stage ``s > 0`` halves the resolution) behind the small-image stem
(3×3 conv, stride 1, no max-pool) used everywhere in this project for ≤ 64 px images.
``widths=(64, 128, 256, 512)`` with ``blocks_per_stage=2`` is ResNet-18 (the paper's
encoder); the experiment default is a narrow copy for 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from flwr_semcom.models.utils import check_image_batch, check_positive_int, check_widths

__all__ = ["BlockEncoder"]


class BlockEncoder(nn.Module):
    """ResNet encoder returning the output of every residual block.

    Parameters
    ----------
    in_channels
        Input channels (3 for RGB).
    widths
        Channels of the four stages (each ≥ 1); ResNet-18 is ``(64, 128, 256, 512)``.
    blocks_per_stage
        ``BasicBlock`` s per stage (ResNet-18: 2), so ``num_nodes = len(widths) * blocks``.

    Notes
    -----
    ``forward(x)`` with ``x`` ``[B, in_channels, H, W]`` returns a list of ``num_nodes``
    tensors; block ``j`` of stage ``s`` has shape ``[B, widths[s], H / 2^s, W / 2^s]``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks_per_stage: int = 2,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("blocks_per_stage", blocks_per_stage)
        widths = check_widths(int(w) for w in widths)
        self.in_channels = in_channels
        self.widths = widths
        self.blocks_per_stage = blocks_per_stage
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for s, c_out in enumerate(widths):
            for j in range(blocks_per_stage):
                stride = 2 if (s > 0 and j == 0) else 1
                down = None
                if stride != 1 or c_in != c_out:
                    down = nn.Sequential(
                        nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                        nn.BatchNorm2d(c_out),
                    )
                blocks.append(BasicBlock(c_in, c_out, stride=stride, downsample=down))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def num_nodes(self) -> int:
        """``N``, the number of residual blocks (graph nodes)."""
        return len(self.blocks)

    @property
    def node_channels(self) -> list[int]:
        """Channels ``C_i`` of each block output, in order."""
        return [w for w in self.widths for _ in range(self.blocks_per_stage)]

    def output_size(self, image_size: int) -> int:
        """Side of the last block's output for square inputs of ``image_size`` pixels."""
        size = image_size
        for _ in self.widths[1:]:
            size = (size + 1) // 2
        return size

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Block outputs ``[F_1, …, F_N]`` of an image batch ``[B, in_channels, H, W]``."""
        check_image_batch(x, self.in_channels)
        h = self.stem(x)
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        return outs
