"""Paper 1 augmentations: seeding, cross-modal geometric consistency, per-modality operations."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from flwr_semcom.config import ConfigError
from flwr_semcom.paper1.augment import AugmentConfig, augment_view, geometric_params, two_views

GEOMETRY_ONLY = AugmentConfig(jitter_p=0.0, grayscale_p=0.0, depth_noise_p=0.0)


def _batch(n: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(n, 3, size, size, generator=g)
    depth = torch.rand(n, 1, size, size, generator=g)
    return rgb, depth


def test_same_seed_same_views_and_different_seed_different_views() -> None:
    rgb, _ = _batch()
    a1, b1 = two_views(rgb, "rgb", 123, AugmentConfig())
    a2, b2 = two_views(rgb, "rgb", 123, AugmentConfig())
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    a3, _ = two_views(rgb, "rgb", 124, AugmentConfig())
    assert not torch.equal(a1, a3)
    assert not torch.equal(a1, b1)  # the two views of a sample differ


def test_rgb_and_depth_views_are_cropped_and_flipped_identically() -> None:
    """DeCUR's cross term pairs view a of RGB with view a of depth: same crop and flip."""
    rgb, _ = _batch()
    depth = rgb[:, :1].clone()  # depth equal to RGB's first channel
    for view in ("a", "b"):
        out_rgb = augment_view(rgb, "rgb", 7, view, GEOMETRY_ONLY)
        out_depth = augment_view(depth, "depth", 7, view, GEOMETRY_ONLY)
        assert torch.allclose(out_rgb[:, :1], out_depth, atol=1e-6)


def test_geometry_matches_torchvision_resized_crop_and_flip() -> None:
    _, depth = _batch(n=4)
    p = geometric_params(4, 16, 16, 99, "a", GEOMETRY_ONLY)
    out = augment_view(depth, "depth", 99, "a", GEOMETRY_ONLY)
    for i in range(4):
        ref = TF.resized_crop(
            depth[i], int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i]), [16, 16]
        )
        if bool(p.flip[i]):
            ref = TF.horizontal_flip(ref)
        assert torch.allclose(out[i], ref, atol=1e-6)
    # crop boxes lie inside the image and cover at least crop_scale_min of it (up to rounding)
    assert bool((p.top >= 0).all() and (p.top + p.height <= 16).all())
    assert bool((p.left >= 0).all() and (p.left + p.width <= 16).all())


def test_depth_gets_no_colour_operations_only_noise() -> None:
    _, depth = _batch()
    noisy = AugmentConfig(depth_noise_p=1.0, depth_noise_std=0.05)
    geo = augment_view(depth, "depth", 5, "a", GEOMETRY_ONLY)
    out = augment_view(depth, "depth", 5, "a", noisy)
    diff = out - geo
    assert out.shape == depth.shape
    assert 0.02 < float(diff.std()) < 0.06  # zero-mean noise of the configured size
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_rgb_jitter_changes_colours_but_keeps_range() -> None:
    rgb, _ = _batch()
    strong = AugmentConfig(jitter_p=1.0, grayscale_p=0.0)
    geo = augment_view(rgb, "rgb", 3, "a", GEOMETRY_ONLY)
    out = augment_view(rgb, "rgb", 3, "a", strong)
    assert not torch.allclose(out, geo)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    gray = augment_view(rgb, "rgb", 3, "a", AugmentConfig(jitter_p=0.0, grayscale_p=1.0))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"flip_p": 1.5}, "pretrain.augment.flip_p"),
        ({"crop_scale_min": 0.0}, "pretrain.augment.crop_scale_min"),
        ({"hue": 0.7}, "pretrain.augment.hue"),
        ({"depth_noise_std": -1.0}, "pretrain.augment.depth_noise_std"),
        ({"colour": 1.0}, "unknown key(s) colour"),
    ],
)
def test_invalid_settings_name_the_key(values: dict[str, float], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        AugmentConfig.from_mapping(values)


def test_bad_inputs_are_rejected() -> None:
    rgb, _ = _batch()
    with pytest.raises(ValueError, match="modality"):
        augment_view(rgb, "thermal", 0, "a", AugmentConfig())
    with pytest.raises(ValueError, match="view"):
        augment_view(rgb, "rgb", 0, "c", AugmentConfig())
