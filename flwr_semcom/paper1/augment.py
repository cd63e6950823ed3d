"""Seeded per-modality augmentations for Stage I (paper 1 Sec. III-A, Algorithm 1 line 5).

Paper 1 (Zhao et al., arXiv 2503.13940) applies "data augmentation to obtain {x^m, x̃^m}"
before computing the intra-modal correlation C^m (eq. 8-10) between the two views of one
modality, and the cross-modal correlation C^{m,n} (eq. 11-15) between modalities. DeCUR's
cross term pairs view ``a`` of RGB with view ``a`` of depth, so those must show the *same*
part of the scene: the geometric draws (crop, flip) of a view depend only on the batch's
augmentation seed and the view name, never on the modality; the photometric draws (colour
jitter and grayscale for RGB, noise for depth) use a per-modality stream. Devices never see
each other's images, yet ``rgb`` view ``a`` and ``depth`` view ``a`` are cropped and flipped
identically (tested).

Every draw comes from a ``torch.Generator`` seeded with
``derive_seed(aug_seed, stream, view[, modality])``, so a recomputed forward (split learning
recomputes it when the gradients arrive) sees bit-identical inputs.

Operations are torchvision.transforms.v2 functionals (``resized_crop``, ``horizontal_flip``,
``adjust_brightness`` / ``adjust_contrast`` / ``adjust_saturation`` / ``adjust_hue``,
``rgb_to_grayscale``) applied per sample with explicitly drawn parameters; depth noise is
Gaussian from the same generator. Depth gets **no colour operations** and no value scaling
(absolute distance is what depth knows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF

from flwr_semcom.rules import ConfigError
from flwr_semcom.split.schedule import derive_seed

__all__ = [
    "AugmentConfig",
    "GeometricParams",
    "augment_view",
    "geometric_params",
    "two_views",
]

VIEWS = ("a", "b")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths (``pretrain.augment`` in the config).

    Attributes
    ----------
    crop_scale_min
        Smallest crop area as a fraction of the image, in (0, 1]; the crop is resized back to
        the input size (RandomResizedCrop with aspect ratio in [3/4, 4/3]).
    flip_p
        Probability of a horizontal flip, in [0, 1].
    jitter_p
        Probability of colour jitter (RGB only), in [0, 1].
    brightness, contrast, saturation
        Jitter factors drawn from [1 - s, 1 + s], s in [0, 1].
    hue
        Hue shift drawn from [-h, h], h in [0, 0.5] (fraction of the hue circle).
    grayscale_p
        Probability of grayscale (RGB only), in [0, 1].
    depth_noise_p
        Probability of additive Gaussian noise on depth, in [0, 1].
    depth_noise_std
        Its standard deviation in normalised depth units (0.01 = 10 cm), >= 0.
    """

    crop_scale_min: float = 0.4
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.04
    grayscale_p: float = 0.1
    depth_noise_p: float = 0.5
    depth_noise_std: float = 0.01

    def __post_init__(self) -> None:
        unit = (
            "flip_p",
            "jitter_p",
            "brightness",
            "contrast",
            "saturation",
            "grayscale_p",
            "depth_noise_p",
        )
        for name in unit:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
                raise ConfigError(f"pretrain.augment.{name}: invalid value {v!r}; expected [0, 1]")
        if not (isinstance(self.crop_scale_min, (int, float)) and 0.0 < self.crop_scale_min <= 1):
            raise ConfigError(
                f"pretrain.augment.crop_scale_min: invalid value {self.crop_scale_min!r}; "
                "expected (0, 1]"
            )
        if not (isinstance(self.hue, (int, float)) and 0.0 <= self.hue <= 0.5):
            raise ConfigError(
                f"pretrain.augment.hue: invalid value {self.hue!r}; expected [0, 0.5]"
            )
        std = self.depth_noise_std
        if not (isinstance(std, (int, float)) and math.isfinite(std) and std >= 0):
            raise ConfigError(
                f"pretrain.augment.depth_noise_std: invalid value {std!r}; expected >= 0"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> AugmentConfig:
        """Build from a config mapping; unknown keys are a :class:`ConfigError`."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"pretrain.augment: unknown key(s) {', '.join(unknown)}; valid keys: "
                + ", ".join(sorted(known))
            )
        return cls(**{k: float(v) for k, v in values.items()})


@dataclass(frozen=True)
class GeometricParams:
    """Per-sample crop boxes and flips of one view: int ``[B]`` tensors and bool ``[B]``."""

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor


def geometric_params(
    n: int, height: int, width: int, aug_seed: int, view: str, cfg: AugmentConfig
) -> GeometricParams:
    """Crop boxes and flips of ``view`` for a batch of ``n`` images; modality-independent.

    RandomResizedCrop's box (area fraction ~ U(crop_scale_min, 1), log aspect ratio ~
    U(log 3/4, log 4/3), clipped to the image) and a flip with probability ``flip_p``, from
    ``derive_seed(aug_seed, "geometry", view)``.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    g = torch.Generator().manual_seed(derive_seed(aug_seed, "geometry", view))
    area = torch.empty(n).uniform_(cfg.crop_scale_min, 1.0, generator=g) * height * width
    log_r = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio).round().clamp(1, width).to(torch.int64)
    h = torch.sqrt(area / ratio).round().clamp(1, height).to(torch.int64)
    top = (torch.rand(n, generator=g) * (height - h + 1).to(torch.float32)).floor().to(torch.int64)
    left = (torch.rand(n, generator=g) * (width - w + 1).to(torch.float32)).floor().to(torch.int64)
    flip = torch.rand(n, generator=g) < cfg.flip_p
    return GeometricParams(top, left, h, w, flip)


def _apply_geometry(x: torch.Tensor, p: GeometricParams) -> torch.Tensor:
    n, _, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(n):
        img = TF.resized_crop(
            x[i],
            int(p.top[i]),
            int(p.left[i]),
            int(p.height[i]),
            int(p.width[i]),
            [h, w],
            antialias=True,
        )
        out[i] = TF.horizontal_flip(img) if bool(p.flip[i]) else img
    return out


def _jitter_rgb(x: torch.Tensor, g: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    n = x.shape[0]
    do_jitter = torch.rand(n, generator=g) < cfg.jitter_p
    factors = torch.rand(n, 3, generator=g) * 2 - 1  # brightness, contrast, saturation
    hues = (torch.rand(n, generator=g) * 2 - 1) * cfg.hue
    order = torch.stack([torch.randperm(4, generator=g) for _ in range(n)])
    gray = torch.rand(n, generator=g) < cfg.grayscale_p
    strengths = (cfg.brightness, cfg.contrast, cfg.saturation)
    out = x.clone()
    for i in range(n):
        img = out[i]
        if bool(do_jitter[i]):
            for op in order[i].tolist():
                if op < 3:
                    f = 1.0 + strengths[op] * float(factors[i, op])
                    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)[op]
                    img = adjust(img, f)
                elif cfg.hue > 0:
                    img = TF.adjust_hue(img, float(hues[i]))
        if bool(gray[i]):
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        out[i] = img.clamp(0.0, 1.0)
    return out


def _noise_depth(x: torch.Tensor, g: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    n = x.shape[0]
    apply = (torch.rand(n, generator=g) < cfg.depth_noise_p).to(x.dtype)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype) * cfg.depth_noise_std
    return (x + apply[:, None, None, None] * noise).clamp(0.0, 1.0)


def augment_view(
    x: torch.Tensor, modality: str, aug_seed: int, view: str, cfg: AugmentConfig
) -> torch.Tensor:
    """One augmented view of an image batch ``[B, C, H, W]`` of ``modality``.

    Geometry (crop, flip) from :func:`geometric_params` (shared by every modality), then the
    photometric part from ``derive_seed(aug_seed, "photometric", view, modality)``: RGB gets
    colour jitter in a random order and grayscale; depth gets Gaussian noise.
    """
    if x.dim() != 4:
        raise ValueError(f"expected an image batch [B, C, H, W], got shape {tuple(x.shape)}")
    if modality not in ("rgb", "depth"):
        raise ValueError(f"modality must be 'rgb' or 'depth', got {modality!r}")
    n, _, h, w = x.shape
    out = _apply_geometry(x, geometric_params(n, h, w, aug_seed, view, cfg))
    g = torch.Generator().manual_seed(derive_seed(aug_seed, "photometric", view, modality))
    if modality == "rgb":
        return _jitter_rgb(out, g, cfg)
    return _noise_depth(out, g, cfg)


def two_views(
    x: torch.Tensor, modality: str, aug_seed: int, cfg: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Views ``a`` and ``b`` of a batch (Algorithm 1 line 5: x^m and x̃^m)."""
    return (
        augment_view(x, modality, aug_seed, "a", cfg),
        augment_view(x, modality, aug_seed, "b", cfg),
    )
