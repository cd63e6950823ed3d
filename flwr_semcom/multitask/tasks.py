"""Tasks of the multi-task link: decoders, losses and metrics (paper 3, Sec. III-C, eq. 16).

Each task ``t`` has a task-specific decoder at the receiver (from the received symbols of
its own sub-channel, reshaped to ``[C_ds, S, S]``), a loss ``L_t`` and a metric; training
minimises ``Σ_t λ_t L_t`` (eq. 16, weights ``multitask.loss_weights``). Tasks on the data we
have (the paper's CityScapes / NYUv2 are not available offline):

- ``classification`` (label): cross-entropy; metric accuracy (higher is better).
- ``depth`` (depth map from the RGB image): L1 over valid pixels (depth 0 = a missing pixel,
  as Kinect holes); metric RMSE in metres over valid pixels (lower is better).
- ``reconstruction`` (the image itself, CIFAR-10): MSE; metric PSNR in dB for images in
  [0, 1] (higher is better).

Metrics are reduced from additive sums (:meth:`Task.stats`) so that devices' evaluation
shards combine exactly (:meth:`Task.finalize`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from flwr_semcom.data.synthetic_rgbd import MAX_DEPTH_M

__all__ = ["TASKS", "Task", "build_task"]


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class Task:
    """Base: a task's name, target key, decoder factory, loss, metric sums and metric."""

    name: str = ""
    metric: str = ""
    higher_is_better: bool = True

    def __init__(self, num_classes: int = 10, out_channels: int = 1) -> None:
        self.num_classes = num_classes
        self.out_channels = out_channels

    def decoder(self, in_channels: int, size: int, image_size: int, hidden: int) -> nn.Module:
        raise NotImplementedError

    def target(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def stats(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def finalize(self, sums: Mapping[str, float]) -> float:
        raise NotImplementedError


def dense_decoder(
    in_channels: int, size: int, image_size: int, hidden: int, out_channels: int
) -> nn.Sequential:
    """``[C_ds, S, S]`` → ``[out, image_size, image_size]`` in [0, 1]: upsample ×2 per stage."""
    layers: list[nn.Module] = _conv_bn(in_channels, hidden)
    c, s = hidden, size
    while s < image_size:
        c_next = max(hidden // 4, c // 2)
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_bn(c, c_next)]
        c, s = c_next, 2 * s
    if s != image_size:
        raise ValueError(f"image_size {image_size} is not node size {size} times a power of 2")
    layers += [nn.Conv2d(c, out_channels, 3, padding=1), nn.Sigmoid()]
    return nn.Sequential(*layers)


class Classification(Task):
    name = "classification"
    metric = "accuracy"

    def decoder(self, in_channels: int, size: int, image_size: int, hidden: int) -> nn.Module:
        return nn.Sequential(
            *_conv_bn(in_channels, hidden),
            *_conv_bn(hidden, hidden),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(hidden, self.num_classes),
        )

    def target(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return batch["label"]

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred, target)

    def stats(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        correct = (pred.argmax(1) == target).sum().item()
        return {"correct": float(correct), "count": float(target.numel())}

    def finalize(self, sums: Mapping[str, float]) -> float:
        return sums["correct"] / max(sums["count"], 1.0)


class Depth(Task):
    """Depth (stored as metres / ``MAX_DEPTH_M`` in [0, 1], 0 = missing) from the RGB image."""

    name = "depth"
    metric = "rmse_m"
    higher_is_better = False

    def decoder(self, in_channels: int, size: int, image_size: int, hidden: int) -> nn.Module:
        return dense_decoder(in_channels, size, image_size, hidden, 1)

    def target(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return batch["depth"]

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = (target > 0).to(pred.dtype)
        return ((pred - target).abs() * valid).sum() / valid.sum().clamp_min(1.0)

    def stats(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        valid = target > 0
        err = (pred - target)[valid] * MAX_DEPTH_M
        return {"sq_err_m2": float((err**2).sum().item()), "pixels": float(valid.sum().item())}

    def finalize(self, sums: Mapping[str, float]) -> float:
        return math.sqrt(sums["sq_err_m2"] / max(sums["pixels"], 1.0))


class Reconstruction(Task):
    """The transmitted image itself (images in [0, 1]); metric mean per-image PSNR."""

    name = "reconstruction"
    metric = "psnr_db"

    def decoder(self, in_channels: int, size: int, image_size: int, hidden: int) -> nn.Module:
        return dense_decoder(in_channels, size, image_size, hidden, self.out_channels)

    def target(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return batch["image"]

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target)

    def stats(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        mse = ((pred - target) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        psnr = 10.0 * torch.log10(1.0 / mse)
        return {"psnr_sum": float(psnr.sum().item()), "count": float(target.shape[0])}

    def finalize(self, sums: Mapping[str, float]) -> float:
        return sums["psnr_sum"] / max(sums["count"], 1.0)


TASKS: dict[str, type[Task]] = {
    "classification": Classification,
    "depth": Depth,
    "reconstruction": Reconstruction,
}


def build_task(name: str, num_classes: int = 10, out_channels: int = 3) -> Task:
    """The task ``name``; an unknown name lists the valid ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(TASKS)}")
    return TASKS[name](num_classes=num_classes, out_channels=out_channels)
