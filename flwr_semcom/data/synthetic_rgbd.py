"""SyntheticRGBD: the embedded RGB-D scene-classification default (no download needed).

A stand-in for NYU Depth V2 in paper 1 (multi-modal self-supervised semcom, Zhao et al.,
arXiv 2503.13940, Sec. II and IV-A): device 1 sees the RGB view, device 2 the depth view of
the same scene, and the server classifies the scene from both. The scenes are procedurally
generated so that DeCUR's common/unique decoupling (paper 1, eq. 10-15) has something to find:

- a **shared** factor, the object's shape, visible as a silhouette in RGB and as a relief
  (a near plate in front of the wall) in depth;
- an **RGB-only** factor, the object's colour family (warm or cool hue), invisible in depth;
- a **depth-only** factor, the object's distance (near or far), invisible in RGB (the
  object's image size, brightness and lighting do not depend on it);

under nuisance variation (position, size, rotation, lighting gain and gradient, background
tint, wall distance and tilt, RGB sensor noise, depth noise and missing pixels).

Class map (``num_classes = C``): class ``k`` has shape ``k // 4``, distance ``(k // 2) % 2``
and colour ``k % 2`` (each shape hosts a 2 x 2 block colour x distance). RGB alone cannot
tell the distance and depth alone cannot tell the colour, so for ``C = 10`` the best
possible accuracy is 60 % from RGB, 50 % from depth and 100 % from both.
The full generative model is written out in ``docs/datasets.md``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import Dataset

SHAPES = ("disk", "ring", "cross", "square", "triangle")
COLOURS = ("warm", "cool")
DISTANCES = ("near", "far")
MODALITIES = ("rgb", "depth")

# Generative-model constants (documented in docs/datasets.md).
HUE_RANGES = ((-30.0, 30.0), (180.0, 240.0))  # degrees, per colour family
NEAR_M, FAR_M = (1.0, 1.6), (2.0, 2.6)  # object plate distance per distance class, metres
WALL_M = (3.0, 4.0)  # background wall distance, metres
MAX_DEPTH_M = 10.0  # depth is stored as metres / MAX_DEPTH_M (as for NYU Depth V2)


def factors_of_class(num_classes: int) -> dict[str, torch.Tensor]:
    """Return the factor of each class: ``{"shape", "distance", "colour"}``, int64 ``[C]``."""
    k = torch.arange(num_classes)
    return {"shape": k // 4, "distance": (k // 2) % 2, "colour": k % 2}


def class_names(num_classes: int) -> list[str]:
    """Names ``"<shape>-<colour>-<distance>"`` of the classes, index = label."""
    f = factors_of_class(num_classes)
    return [
        f"{SHAPES[int(s)]}-{COLOURS[int(c)]}-{DISTANCES[int(d)]}"
        for s, c, d in zip(f["shape"], f["colour"], f["distance"])
    ]


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vectorised HSV → RGB; ``h`` in degrees, all ``[N]``; returns ``[N, 3]``."""
    h = torch.remainder(h, 360.0) / 60.0
    k = torch.stack(
        [
            torch.remainder(5.0 + h, 6.0),
            torch.remainder(3.0 + h, 6.0),
            torch.remainder(1.0 + h, 6.0),
        ],
        dim=1,
    )
    m = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return v[:, None] - v[:, None] * s[:, None] * m


def _shape_masks(
    shape: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    r: torch.Tensor,
    theta: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Boolean silhouettes ``[N, H, W]`` for shape ids, centres, radii, rotations (pixels)."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy
    rr = r[:, None, None]
    dist = torch.sqrt(dx**2 + dy**2)
    masks = torch.stack(
        [
            dist <= rr,  # disk
            (dist <= rr) & (dist >= 0.55 * rr),  # ring
            ((u.abs() <= 0.33 * rr) & (v.abs() <= rr)) | ((v.abs() <= 0.33 * rr) & (u.abs() <= rr)),
            (u.abs() <= 0.8 * rr) & (v.abs() <= 0.8 * rr),  # square
            # equilateral triangle inscribed in the circle of radius r
            (v <= 0.5 * rr) & (math.sqrt(3.0) * u - v <= rr) & (-math.sqrt(3.0) * u - v <= rr),
        ],
        dim=1,
    )
    return masks[torch.arange(shape.numel()), shape]


class SyntheticRGBD(Dataset[dict[str, Any]]):
    """Paired RGB and depth scenes whose class needs both modalities.

    Parameters
    ----------
    num_samples
        Number of scenes N (>= 1).
    image_size
        Side H = W in pixels (8 to 512).
    seed
        Seed of every random draw; the same arguments give the same tensors.
    num_classes
        C in [2, 20]; class k has shape ``k // 4``, distance ``(k // 2) % 2``, colour
        ``k % 2``. Labels are balanced (``N // C`` or ``N // C + 1`` per class).
    rgb_noise
        Standard deviation of the additive Gaussian RGB sensor noise (in [0, 1] units).
    depth_noise_m
        Standard deviation of the additive Gaussian depth noise in metres.
    depth_dropout
        Probability that a depth pixel is missing (set to 0, as Kinect holes).

    Attributes
    ----------
    rgb
        float32 ``[N, 3, H, W]`` in [0, 1].
    depth
        float32 ``[N, 1, H, W]`` in [0, 1]: metres / 10 (0 = missing).
    labels
        int64 ``[N]`` in ``[0, C)``.
    classes
        Class names ``"<shape>-<colour>-<distance>"``.
    factors
        int64 ``[N]`` tensors ``{"shape", "colour", "distance"}`` of every scene.
    """

    def __init__(
        self,
        num_samples: int = 3000,
        image_size: int = 32,
        seed: int = 0,
        num_classes: int = 10,
        rgb_noise: float = 0.03,
        depth_noise_m: float = 0.03,
        depth_dropout: float = 0.02,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 8 <= image_size <= 512:
            raise ValueError(f"image_size must be in [8, 512] pixels, got {image_size}")
        if not 2 <= num_classes <= 4 * len(SHAPES):
            raise ValueError(f"num_classes must be in [2, {4 * len(SHAPES)}], got {num_classes}")
        if rgb_noise < 0 or depth_noise_m < 0:
            raise ValueError(
                f"rgb_noise and depth_noise_m must be >= 0, got {rgb_noise}, {depth_noise_m}"
            )
        if not 0.0 <= depth_dropout < 1.0:
            raise ValueError(f"depth_dropout must be in [0, 1), got {depth_dropout}")
        self.num_classes = num_classes
        self.image_size = image_size
        self.seed = seed
        self.classes = class_names(num_classes)
        g = torch.Generator().manual_seed(seed)
        n, size = num_samples, image_size

        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
        per_class = factors_of_class(num_classes)
        shape, colour, distance = (per_class[k][labels] for k in ("shape", "colour", "distance"))

        # geometry (shared): silhouette of the object, position / size / rotation are nuisance
        r = _uniform(g, n, 0.22, 0.32) * size
        cx = _uniform(g, n, 0.0, 1.0) * (size - 2 * r) + r
        cy = _uniform(g, n, 0.0, 1.0) * (size - 2 * r) + r
        theta = _uniform(g, n, 0.0, 2 * math.pi)
        mask = _shape_masks(shape, cx, cy, r, theta, size).unsqueeze(1).float()  # [N,1,H,W]

        # RGB: colour family (RGB-only) on a greyish background, lighting, sensor noise
        hue_lo = torch.tensor([lo for lo, _ in HUE_RANGES])[colour]
        hue_hi = torch.tensor([hi for _, hi in HUE_RANGES])[colour]
        hue = hue_lo + torch.rand(n, generator=g) * (hue_hi - hue_lo)
        obj = _hsv_to_rgb(hue, _uniform(g, n, 0.6, 1.0), _uniform(g, n, 0.7, 1.0))
        bg = _hsv_to_rgb(
            _uniform(g, n, 0.0, 360.0), _uniform(g, n, 0.0, 0.15), _uniform(g, n, 0.3, 0.6)
        )
        rgb = bg[:, :, None, None] * (1 - mask) + obj[:, :, None, None] * mask
        ramp = torch.linspace(-0.5, 0.5, size)
        gain = _uniform(g, n, 0.7, 1.1)[:, None, None, None]
        gx = _uniform(g, n, -0.3, 0.3)[:, None, None, None] * ramp[None, None, None, :]
        gy = _uniform(g, n, -0.3, 0.3)[:, None, None, None] * ramp[None, None, :, None]
        rgb = rgb * gain * (1 + gx + gy)
        rgb = rgb + rgb_noise * torch.randn(rgb.shape, generator=g)
        self.rgb = rgb.clamp_(0.0, 1.0)

        # depth: tilted wall, object plate at a near / far distance (depth-only), noise, holes
        wall = _uniform(g, n, *WALL_M)[:, None, None, None]
        wx = _uniform(g, n, -0.4, 0.4)[:, None, None, None] * ramp[None, None, None, :]
        wy = _uniform(g, n, -0.4, 0.4)[:, None, None, None] * ramp[None, None, :, None]
        near = _uniform(g, n, *NEAR_M)
        far = _uniform(g, n, *FAR_M)
        z_obj = torch.where(distance == 0, near, far)[:, None, None, None]
        px = _uniform(g, n, -0.1, 0.1)[:, None, None, None] * ramp[None, None, None, :]
        py = _uniform(g, n, -0.1, 0.1)[:, None, None, None] * ramp[None, None, :, None]
        metres = (wall + wx + wy) * (1 - mask) + (z_obj + px + py) * mask
        metres = metres + depth_noise_m * torch.randn(metres.shape, generator=g)
        holes = torch.rand(metres.shape, generator=g) < depth_dropout
        self.depth = (metres / MAX_DEPTH_M).clamp_(0.0, 1.0).masked_fill_(holes, 0.0)

        self.labels = labels.to(torch.int64)
        self.factors = {"shape": shape, "colour": colour, "distance": distance}

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "rgb": self.rgb[index],
            "depth": self.depth[index],
            "label": int(self.labels[index]),
        }
