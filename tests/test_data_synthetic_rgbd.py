"""Tests of SyntheticRGBD: shapes, determinism, speed, and the factor structure that makes
fusion of RGB and depth beat each modality (what DeCUR's common/unique split is about)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from flwr_semcom.data.synthetic_rgbd import SyntheticRGBD, class_names, factors_of_class


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: the probes are many small ops, which oversubscribed threads on a
    shared CPU slow down by an order of magnitude."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ds() -> SyntheticRGBD:
    return SyntheticRGBD(num_samples=1000, image_size=32, seed=1)


@pytest.fixture(scope="module")
def feats(ds: SyntheticRGBD) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled random-conv features of the RGB and of the depth views."""
    return random_conv_features(ds.rgb, 0), random_conv_features(ds.depth, 1)


def random_conv_features(x: torch.Tensor, seed: int, num_filters: int = 64) -> torch.Tensor:
    """Translation-invariant pooled features of a fixed random conv layer (no training)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(num_filters, x.shape[1], 5, 5, generator=g)
    w = w - w.mean((1, 2, 3), keepdim=True)
    w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    h = torch.relu(F.conv2d((x - x.mean()) / x.std(), w, padding=2))
    return torch.cat([h.amax((2, 3)), h.mean((2, 3))], dim=1)


def probe_accuracy(feats: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy of an L2-regularised logistic-regression probe (LBFGS, seeded),
    trained on the first 60 % of the samples and tested on the rest."""
    n_train = int(0.6 * len(y))
    mu, sd = feats[:n_train].mean(0), feats[:n_train].std(0) + 1e-6
    z = (feats - mu) / sd
    torch.manual_seed(0)
    lin = torch.nn.Linear(z.shape[1], int(y.max()) + 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lin(z[:n_train]), y[:n_train]) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(z[n_train:]).argmax(1) == y[n_train:]).float().mean())


def test_shapes_ranges_and_items(ds: SyntheticRGBD) -> None:
    assert ds.rgb.shape == (1000, 3, 32, 32) and ds.rgb.dtype == torch.float32
    assert ds.depth.shape == (1000, 1, 32, 32) and ds.depth.dtype == torch.float32
    assert ds.labels.dtype == torch.int64 and len(ds) == 1000
    for t in (ds.rgb, ds.depth):
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert torch.bincount(ds.labels).tolist() == [100] * 10
    item = ds[5]
    assert set(item) == {"rgb", "depth", "label"} and item["label"] == int(ds.labels[5])
    assert torch.equal(item["rgb"], ds.rgb[5]) and torch.equal(item["depth"], ds.depth[5])
    assert ds.classes[0] == "disk-warm-near" and ds.classes[9] == "cross-cool-near"
    assert len(ds.classes) == len(set(ds.classes)) == 10


def test_class_map_factors() -> None:
    f = factors_of_class(10)
    assert f["shape"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert f["distance"].tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 0, 0]
    assert f["colour"].tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    # every class is a distinct (shape, colour, distance) triple
    triples = set(zip(f["shape"].tolist(), f["colour"].tolist(), f["distance"].tolist()))
    assert len(triples) == 10 and len(class_names(20)) == 20


def test_factors_follow_labels(ds: SyntheticRGBD) -> None:
    f = factors_of_class(10)
    for key in ("shape", "colour", "distance"):
        assert torch.equal(ds.factors[key], f[key][ds.labels])


def test_deterministic_from_seed() -> None:
    a = SyntheticRGBD(num_samples=50, image_size=16, seed=3)
    b = SyntheticRGBD(num_samples=50, image_size=16, seed=3)
    c = SyntheticRGBD(num_samples=50, image_size=16, seed=4)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.rgb, c.rgb)


def test_default_generation_is_fast() -> None:
    start = time.perf_counter()
    full = SyntheticRGBD(num_samples=3000, image_size=32, seed=0)
    elapsed = time.perf_counter() - start
    assert len(full) == 3000 and full.rgb.shape == (3000, 3, 32, 32)
    assert elapsed < 5.0, f"3,000 x 32 px took {elapsed:.2f} s"


def test_depth_is_physical(ds: SyntheticRGBD) -> None:
    metres = ds.depth * 10.0
    valid = metres > 0
    near = (ds.factors["distance"] == 0).view(-1, 1, 1, 1)
    # the nearest valid pixel is the object plate: ~1.0-1.6 m when near, ~2.0-2.6 m when far
    nearest = torch.where(valid, metres, torch.full_like(metres, 99.0)).amin((1, 2, 3))
    assert float(nearest[near.flatten()].max()) < 1.8
    assert float(nearest[~near.flatten()].min()) > 1.7
    assert 0.005 < float((~valid).float().mean()) < 0.04  # ~2 % missing pixels


def test_each_factor_is_seen_only_by_its_modalities(
    ds: SyntheticRGBD, feats: tuple[torch.Tensor, torch.Tensor]
) -> None:
    fr, fd = feats
    f = ds.factors
    # shared factor: both modalities see the shape
    assert probe_accuracy(fr, f["shape"]) > 0.75 and probe_accuracy(fd, f["shape"]) > 0.75
    # on the disk/ring classes (0-7) shape x colour x distance is a full product, so a
    # factor a modality cannot see is at chance (0.5) there
    block = f["shape"] < 2
    fr_b, fd_b = fr[block], fd[block]
    # RGB-only factor: colour is visible in RGB, at chance level in depth
    assert probe_accuracy(fr_b, f["colour"][block]) > 0.9
    assert probe_accuracy(fd_b, f["colour"][block]) < 0.6
    # depth-only factor: distance is visible in depth, at chance level in RGB
    assert probe_accuracy(fd_b, f["distance"][block]) > 0.9
    assert probe_accuracy(fr_b, f["distance"][block]) < 0.6


def test_fusion_beats_each_single_modality(
    ds: SyntheticRGBD, feats: tuple[torch.Tensor, torch.Tensor]
) -> None:
    fr, fd = feats
    acc_rgb = probe_accuracy(fr, ds.labels)
    acc_depth = probe_accuracy(fd, ds.labels)
    acc_both = probe_accuracy(torch.cat([fr, fd], dim=1), ds.labels)
    print(f"probe accuracy: rgb {acc_rgb:.3f}, depth {acc_depth:.3f}, both {acc_both:.3f}")
    # single modalities cannot exceed 0.6 (RGB) / 0.5 (depth) by construction
    assert acc_rgb <= 0.65 and acc_depth <= 0.55
    assert acc_both >= max(acc_rgb, acc_depth) + 0.10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, r"num_samples must be >= 1, got 0"),
        ({"image_size": 4}, r"image_size must be in \[8, 512\] pixels, got 4"),
        ({"num_classes": 21}, r"num_classes must be in \[2, 20\], got 21"),
        ({"depth_dropout": 1.0}, r"depth_dropout must be in \[0, 1\), got 1.0"),
        ({"rgb_noise": -0.1}, r"rgb_noise and depth_noise_m must be >= 0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticRGBD(**kwargs)  # type: ignore[arg-type]
