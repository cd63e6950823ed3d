"""Tests of the NYU Depth V2 reader on small files generated here in the real layout:
a MATLAB 7.3 HDF5 file (512-byte userblock header, ``#refs#`` char arrays, object references
in ``sceneTypes``) and a MATLAB v5 ``splits.mat``."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from flwr_semcom.data import DataFormatError, DataNotFoundError
from flwr_semcom.data.nyu import NYU_CLASSES, NYUDepthV2, scene_to_label

SCENES = [
    "kitchen", "office", "bedroom", "living_room", "bathroom", "dining_room",
    "bookstore", "classroom", "home_office", "basement", "study", "cafe",
]  # fmt: skip
TRAIN = [1, 3, 5, 7, 9, 11]  # 1-based, as in the official splits.mat
TEST = [2, 4, 6, 8, 10, 12]
H, W = 48, 64  # real file: 480 x 640


def matlab_header() -> bytes:
    text = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, "
        b"Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    )
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def write_nyu_mat(
    path: Path,
    scenes: list[str] = SCENES,
    with_scenes: bool = True,
    images_shape: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Write a MATLAB 7.3 file like nyu_depth_v2_labeled.mat; return the H x W arrays."""
    n = len(scenes)
    rng = np.random.default_rng(0)
    rgb_hw = rng.integers(0, 256, size=(n, 3, H, W), dtype=np.uint8)  # as we want to read it
    depth_hw = rng.uniform(0.5, 9.5, size=(n, H, W)).astype(np.float32)
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        images = rgb_hw.transpose(0, 1, 3, 2)  # stored (N, 3, W, H)
        if images_shape is not None:
            images = np.zeros(images_shape, np.uint8)
        f.create_dataset("images", data=images).attrs["MATLAB_class"] = np.bytes_("uint8")
        f.create_dataset("depths", data=depth_hw.transpose(0, 2, 1)).attrs["MATLAB_class"] = (
            np.bytes_("single")
        )
        if with_scenes:
            refs_group = f.create_group("#refs#")
            refs = np.empty((1, n), dtype=h5py.ref_dtype)
            for i, name in enumerate(scenes):
                chars = refs_group.create_dataset(
                    f"s{i}", data=np.array([[ord(c)] for c in name], dtype=np.uint16)
                )
                chars.attrs["MATLAB_class"] = np.bytes_("char")
                chars.attrs["MATLAB_int_decode"] = np.int32(2)
                refs[0, i] = chars.ref
            cell = f.create_dataset("sceneTypes", data=refs, dtype=h5py.ref_dtype)
            cell.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as fh:
        fh.write(matlab_header())
    return rgb_hw, depth_hw


@pytest.fixture()
def nyu_root(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    folder = tmp_path / "nyu_depth_v2"
    folder.mkdir()
    rgb, depth = write_nyu_mat(folder / "nyu_depth_v2_labeled.mat")
    scipy.io.savemat(
        folder / "splits.mat",
        {"trainNdxs": np.array(TRAIN, float)[:, None], "testNdxs": np.array(TEST, float)[:, None]},
    )
    return tmp_path, rgb, depth


def test_generated_file_has_the_matlab_layout(
    nyu_root: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    path = nyu_root[0] / "nyu_depth_v2" / "nyu_depth_v2_labeled.mat"
    assert path.read_bytes()[:10] == b"MATLAB 7.3" and h5py.is_hdf5(path)
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512 and f["images"].shape == (12, 3, W, H)
        assert f["sceneTypes"].shape == (1, 12)


def test_scene_mapping_to_ten_classes() -> None:
    assert NYU_CLASSES[-1] == "others" and len(NYU_CLASSES) == 10
    assert scene_to_label("kitchen") == 6 and scene_to_label("office") == 8
    for other in ("basement", "study", "cafe", "office_kitchen", "home_storage"):
        assert scene_to_label(other) == 9


def test_train_and_test_splits(nyu_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root = nyu_root[0]
    train = NYUDepthV2(root, "train", image_size=24, resize=32)
    test = NYUDepthV2(root, "test", image_size=24, resize=32)
    assert train.indices.tolist() == [i - 1 for i in TRAIN] and len(test) == 6
    assert train.scene_types == [
        "kitchen",
        "bedroom",
        "bathroom",
        "bookstore",
        "home_office",
        "study",
    ]
    assert train.labels.tolist() == [6, 1, 0, 2, 5, 9]
    assert test.labels.tolist() == [8, 7, 4, 3, 9, 9]
    assert train.classes == NYU_CLASSES and len(NYUDepthV2(root, "all", 24, 32)) == 12
    item = train[0]
    assert set(item) == {"rgb", "depth", "label"} and item["label"] == 6
    assert item["rgb"].shape == (3, 24, 24) and item["depth"].shape == (1, 24, 24)
    assert item["rgb"].dtype == torch.float32 and type(item["rgb"]) is torch.Tensor
    assert float(item["rgb"].min()) >= 0 and float(item["rgb"].max()) <= 1.0
    assert float(item["depth"].min()) >= 0.04 and float(item["depth"].max()) <= 0.96


def test_orientation_and_depth_normalisation(nyu_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, rgb, depth = nyu_root
    ds = NYUDepthV2(root, "test", image_size=H, resize=H)
    raw_rgb, metres = ds.read_raw(1)  # file index 3 (test index 4, 1-based)
    assert raw_rgb.shape == (3, H, W) and metres.shape == (1, H, W)
    assert torch.equal(raw_rgb, torch.from_numpy(rgb[3]))
    assert torch.equal(metres[0], torch.from_numpy(depth[3]))
    # resize=image_size → centre crop of the full (squashed) image; depth = metres / 10
    ds_full = NYUDepthV2(root, "test", image_size=W, resize=W)
    ds_full.transform = lambda *x: x  # type: ignore[assignment,method-assign]
    item = ds_full[1]
    assert torch.allclose(item["depth"], torch.from_numpy(depth[3])[None] / 10.0)
    assert torch.allclose(item["rgb"], torch.from_numpy(rgb[3]).float() / 255.0)


def test_random_crop_is_shared_by_rgb_and_depth(
    nyu_root: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    root = nyu_root[0]
    ds = NYUDepthV2(root, "train", image_size=16, resize=32)
    # make depth a copy of the red channel (scaled): the same crop keeps them equal
    raw_rgb, _ = ds.read_raw(0)
    ds.read_raw = lambda index: (raw_rgb, raw_rgb[:1].float() / 25.5)  # type: ignore[method-assign]
    torch.manual_seed(0)
    crops = set()
    for _ in range(6):
        item = ds[0]
        assert torch.allclose(item["rgb"][0], item["depth"][0], atol=1 / 255 + 1e-6)
        crops.add(round(float(item["rgb"][0, 0, 0]), 4))
    assert len(crops) > 1  # the crop is random for train
    test = NYUDepthV2(root, "test", image_size=16, resize=32)
    assert torch.equal(test[0]["rgb"], test[0]["rgb"])  # centre crop is deterministic


def test_lazy_handle_pickles_for_workers(nyu_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    ds = NYUDepthV2(nyu_root[0], "test", image_size=24, resize=32)
    before = ds[2]["depth"]
    assert ds._h5 is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None and torch.equal(clone[2]["depth"], before)
    ds.close()
    assert ds._h5 is None and torch.equal(ds[2]["depth"], before)


def test_missing_files_and_fields(tmp_path: Path) -> None:
    with pytest.raises(
        DataNotFoundError, match=r"nyu_depth_v2_labeled\.mat does not exist; expected"
    ):
        NYUDepthV2(tmp_path, "train")
    write_nyu_mat(tmp_path / "nyu_depth_v2_labeled.mat")
    with pytest.raises(
        DataNotFoundError, match=r"splits\.mat does not exist; expected the official"
    ):
        NYUDepthV2(tmp_path, "train")
    assert len(NYUDepthV2(tmp_path, "all")) == 12  # no split file needed
    no_scenes = tmp_path / "noscenes.mat"
    write_nyu_mat(no_scenes, with_scenes=False)
    with pytest.raises(DataFormatError, match=r"no field 'sceneTypes'; expected a cell array"):
        NYUDepthV2(None, "all", mat_path=no_scenes)
    v5 = tmp_path / "v5.mat"
    scipy.io.savemat(v5, {"images": np.zeros((2, 2))})
    with pytest.raises(DataFormatError, match=r"not a MATLAB v7.3 \(HDF5\) file"):
        NYUDepthV2(None, "all", mat_path=v5)


def test_wrong_shapes_and_splits(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mat"
    write_nyu_mat(bad, images_shape=(12, 4, W, H))
    with pytest.raises(DataFormatError, match=r"images is \(12, 4, 64, 48\) uint8; expected uint8"):
        NYUDepthV2(None, "all", mat_path=bad)
    short = tmp_path / "short.mat"
    write_nyu_mat(short, images_shape=(11, 3, W, H))
    with pytest.raises(DataFormatError, match=r"depths is \(12, 64, 48\) float32; expected float"):
        NYUDepthV2(None, "all", mat_path=short)
    good = tmp_path / "nyu_depth_v2_labeled.mat"
    write_nyu_mat(good)
    scipy.io.savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[0.0], [1.0]]),
                                               "testNdxs": np.array([[2.0]])})  # fmt: skip
    with pytest.raises(DataFormatError, match=r"trainNdxs spans \[0, 1\]; expected 1-based"):
        NYUDepthV2(tmp_path, "train")
    scipy.io.savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[1.0]])})
    with pytest.raises(DataFormatError, match=r"no field 'testNdxs'"):
        NYUDepthV2(tmp_path, "train")
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'all'\)"):
        NYUDepthV2(tmp_path, "val")
    with pytest.raises(ValueError, match=r"image_size must be in \[1, resize=256\], got 300"):
        NYUDepthV2(tmp_path, "all", image_size=300)
