"""Multi-task semantic links: GAI, GAI-w and separate single-task DeepJSCC links.

Paper 3 (arXiv 2501.02006), Sec. III, Fig. 2: image ``x`` → shared ResNet encoder → GAI
module (:mod:`.gai`) → one fused feature ``X_t`` per task → channel downscaling (a 1×1
convolution from ``C_out`` to ``C_ds,t`` channels on the ``S × S`` map) → AWGN → the task's
decoder. Methods (``METHODS``):

- ``gai``: the paper's model (``M`` graph-attention iterations);
- ``gai_w``: the paper's GAI-w ablation, the same model without graph updates (``M = 0``:
  relation mapping and fusion act on the transformed nodes ``V^0``);
- ``separate``: one single-task DeepJSCC link per task (its own encoder of the same
  architecture, last block output → downscaling → AWGN → decoder), no sharing.

**Bandwidth.** ``R = k / n`` with ``n = C·H·W`` real source dimensions and ``k`` complex
channel uses per image (:func:`flwr_semcom.models.jscc.bandwidth_ratio`), so
``k = round(R · n)`` (:func:`symbols_for_ratio`; ``R = 1/12`` of a 3×32×32 image is 256).
All methods spend the same ``k`` per image: task ``t`` gets its own sub-channel of ``k_t``
symbols (``k`` split evenly, :func:`split_symbols`), i.e. ``2 k_t = C_ds,t · S²`` reals,
normalised to unit average power per complex symbol by the channel (equal power per task).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flwr_semcom.channels import channel_uses
from flwr_semcom.multitask.backbone import BlockEncoder
from flwr_semcom.multitask.gai import GAIModule
from flwr_semcom.multitask.tasks import Task

__all__ = ["METHODS", "MultiTaskSemCom", "split_symbols", "symbols_for_ratio"]

METHODS = ("gai", "gai_w", "separate")


def symbols_for_ratio(ratio: float, source_dims: int) -> int:
    """``k = round(R · n)`` complex channel uses per image (at least 1)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"bandwidth ratio R must be in (0, 1], got {ratio!r}")
    return max(1, round(ratio * source_dims))


def split_symbols(k: int, num_tasks: int) -> list[int]:
    """Split ``k`` channel uses evenly over the tasks (the first tasks take the remainder)."""
    if k < num_tasks:
        raise ValueError(f"{k} channel uses cannot be split over {num_tasks} tasks")
    base, extra = divmod(k, num_tasks)
    return [base + (1 if t < extra else 0) for t in range(num_tasks)]


class MultiTaskSemCom(nn.Module):
    """Transmitter (encoder [+ GAI] + downscaling), AWGN sub-channels, task decoders.

    Parameters
    ----------
    tasks
        The ``T`` tasks, in order.
    method
        One of :data:`METHODS`.
    num_symbols
        ``k``, complex channel uses per image over all tasks.
    image_size, in_channels
        Square input side and channels.
    widths, blocks_per_stage
        Encoder (:class:`~flwr_semcom.multitask.backbone.BlockEncoder`).
    node_channels, heads, iterations, relation_hidden
        GAI's ``C_out``, attention heads, ``M`` (ignored by ``gai_w``: 0) and ``C_rm``.
    decoder_hidden
        Channels of the task decoders.

    Notes
    -----
    ``forward(x, channel=None, generator=None)`` returns ``{"z": {task: [B, 2k_t]}, "z_hat":
    {task: [B, 2k_t]}, "outputs": {task: prediction}, "weights": [B, T, N] or None,
    "attention": [B, M, H, N, N] or None}``; ``channel=None`` is an ideal link.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        method: str,
        num_symbols: int,
        *,
        image_size: int = 32,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks_per_stage: int = 2,
        node_channels: int = 64,
        heads: int = 4,
        iterations: int = 1,
        relation_hidden: int = 256,
        decoder_hidden: int = 64,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid names: {', '.join(METHODS)}")
        self.tasks = list(tasks)
        self.task_names = [t.name for t in self.tasks]
        self.method = method
        self.num_symbols = num_symbols
        self.symbols = split_symbols(num_symbols, len(self.tasks))
        self.image_size = image_size
        self.in_channels = in_channels

        def encoder() -> BlockEncoder:
            return BlockEncoder(in_channels, widths, blocks_per_stage)

        probe = encoder()
        self.size = probe.output_size(image_size)
        area = self.size * self.size
        self.ds_channels = []
        for name, k_t in zip(self.task_names, self.symbols):
            if (2 * k_t) % area:
                raise ValueError(
                    f"task {name}: 2k_t = {2 * k_t} reals do not fill whole {self.size}x"
                    f"{self.size} maps; pick R so that 2k/T is a multiple of {area}"
                )
            self.ds_channels.append(2 * k_t // area)
        self.gai: GAIModule | None = None
        if method == "separate":
            self.encoders = nn.ModuleList([probe] + [encoder() for _ in self.tasks[1:]])
            feat = probe.widths[-1]
        else:
            self.encoders = nn.ModuleList([probe])
            self.gai = GAIModule(
                probe.node_channels,
                node_channels,
                self.size,
                heads,
                iterations if method == "gai" else 0,
                relation_hidden,
                len(self.tasks),
            )
            feat = node_channels
        self.downscale = nn.ModuleList(nn.Conv2d(feat, c, 1) for c in self.ds_channels)
        self.decoders = nn.ModuleList(
            t.decoder(c, self.size, image_size, decoder_hidden)
            for t, c in zip(self.tasks, self.ds_channels)
        )

    @property
    def num_nodes(self) -> int:
        enc = self.encoders[0]
        assert isinstance(enc, BlockEncoder)
        return enc.num_nodes

    def encode(self, x: torch.Tensor) -> dict[str, object]:
        """Transmitter: ``{"z": {task: [B, 2k_t]}, "weights", "attention"}``."""
        if self.gai is None:
            feats = [enc(x)[-1] for enc in self.encoders]
            weights = attention = None
        else:
            out = self.gai(self.encoders[0](x))
            feats = list(out["fused"].unbind(1))
            weights, attention = out["weights"], out["attention"]
        z = {name: ds(f).flatten(1) for name, ds, f in zip(self.task_names, self.downscale, feats)}
        return {"z": z, "weights": weights, "attention": attention}

    def decode(self, z_hat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Receiver: each task's prediction from its received sub-channel symbols."""
        out = {}
        for name, c, dec in zip(self.task_names, self.ds_channels, self.decoders):
            out[name] = dec(z_hat[name].reshape(-1, c, self.size, self.size))
        return out

    def forward(
        self,
        x: torch.Tensor,
        channel: nn.Module | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, object]:
        enc = self.encode(x)
        z = enc["z"]
        assert isinstance(z, dict)
        if channel is None:
            z_hat = dict(z)
        else:
            z_hat = {name: channel(v, generator=generator) for name, v in z.items()}
        return {**enc, "z_hat": z_hat, "outputs": self.decode(z_hat)}

    def channel_uses(self) -> int:
        """Complex channel uses per image over all sub-channels (``k``)."""
        return sum(self.symbols)

    @staticmethod
    def count_uses(z: dict[str, torch.Tensor]) -> int:
        """Channel uses of one sample of an encoded batch (``Σ_t k_t``)."""
        return sum(channel_uses(v) for v in z.values())
