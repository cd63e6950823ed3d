"""NYU Depth V2 (labeled subset) for RGB-D scene classification, read lazily from the .mat file.

Paper 1 (multi-modal self-supervised semcom, Zhao et al., arXiv 2503.13940, Sec. IV-A):
1,449 RGB-D pairs, 27 scene types consolidated into 10 classes (the 9 most common + "others"),
795 train / 654 test (the official ``splits.mat``), resize to 256 x 256 then a 224 x 224
random crop. Data: Silberman, Hoiem, Kohli, Fergus, "Indoor segmentation and support
inference from RGBD images", ECCV 2012.

File layout (MATLAB v7.3 = HDF5, so h5py sees MATLAB's arrays transposed):

- ``images``: uint8 ``(N, 3, 640, 480)`` = MATLAB's ``480 x 640 x 3 x N``;
- ``depths``: float32 ``(N, 640, 480)`` in metres;
- ``sceneTypes``: a ``N x 1`` cell array, stored as object references (shape ``(1, N)``) to
  char arrays (uint16 codes, shape ``(len, 1)``) in the ``#refs#`` group.

``splits.mat`` (MATLAB v5) holds 1-based ``trainNdxs`` (795) and ``testNdxs`` (654).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from flwr_semcom.data.errors import DataFormatError, DataNotFoundError

MAT_NAME = "nyu_depth_v2_labeled.mat"
SPLITS_NAME = "splits.mat"
NYU_SPLITS = ("train", "test", "all")
# The standard 10-class protocol: the 9 most common scene types + "others" (label 9).
NYU_CLASSES = [
    "bathroom",
    "bedroom",
    "bookstore",
    "classroom",
    "dining_room",
    "home_office",
    "kitchen",
    "living_room",
    "office",
    "others",
]
NYU_MAX_DEPTH_M = 10.0  # depth is stored as metres / 10, clamped to [0, 1]


def scene_to_label(scene: str) -> int:
    """Map one of the 27 NYU scene types to the 10-class protocol (unknown → ``others``)."""
    name = scene.strip()
    return NYU_CLASSES.index(name) if name in NYU_CLASSES[:-1] else len(NYU_CLASSES) - 1


def find_nyu_files(root: str | Path) -> tuple[Path, Path]:
    """Return ``(mat, splits)`` paths in ``<root>/nyu_depth_v2/`` if the .mat is there, else
    in ``<root>``; existence is checked by :class:`NYUDepthV2`."""
    root = Path(root)
    sub = root / "nyu_depth_v2"
    folder = sub if (sub / MAT_NAME).is_file() else root
    return folder / MAT_NAME, folder / SPLITS_NAME


def _read_char_array(f: h5py.File, ref: Any, mat_path: Path, i: int) -> str:
    try:
        obj = f[ref]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(
            f"{mat_path}: sceneTypes entry {i} is not a valid object reference; expected a "
            "MATLAB cell array of char arrays"
        ) from exc
    if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "ui":
        raise DataFormatError(
            f"{mat_path}: sceneTypes entry {i} points to {obj!r}; expected a char array "
            "(uint16 codes)"
        )
    return "".join(chr(int(c)) for c in np.asarray(obj[()]).reshape(-1))


def read_scene_types(f: h5py.File, mat_path: Path) -> list[str]:
    """Read the ``sceneTypes`` cell array (object references to char arrays) as strings."""
    if "sceneTypes" not in f:
        raise DataFormatError(
            f"{mat_path} has no field 'sceneTypes'; expected a cell array of scene names "
            f"(fields present: {', '.join(k for k in f if not k.startswith('#'))})"
        )
    ds = f["sceneTypes"]
    if not isinstance(ds, h5py.Dataset) or ds.dtype != h5py.ref_dtype:
        raise DataFormatError(
            f"{mat_path}: 'sceneTypes' is {ds!r}; expected a dataset of object references "
            "(a MATLAB cell array)"
        )
    refs = np.asarray(ds[()]).reshape(-1)
    return [_read_char_array(f, ref, mat_path, i) for i, ref in enumerate(refs)]


def read_splits(path: Path, num_images: int) -> dict[str, np.ndarray]:
    """Read ``trainNdxs`` / ``testNdxs`` (1-based) and return 0-based int64 index arrays."""
    if not path.is_file():
        raise DataNotFoundError(
            f"NYU Depth V2 split file {path} does not exist; expected the official {SPLITS_NAME} "
            "(MATLAB v5, trainNdxs / testNdxs) next to the .mat file"
        )
    try:
        mat = scipy.io.loadmat(str(path))
    except (ValueError, NotImplementedError, OSError) as exc:
        raise DataFormatError(f"{path} cannot be read as a MATLAB v5 file ({exc})") from exc
    out: dict[str, np.ndarray] = {}
    for key, field in (("train", "trainNdxs"), ("test", "testNdxs")):
        if field not in mat:
            raise DataFormatError(f"{path} has no field {field!r}; expected trainNdxs and testNdxs")
        idx = np.asarray(mat[field]).reshape(-1).astype(np.int64)
        if idx.size == 0 or int(idx.min()) < 1 or int(idx.max()) > num_images:
            lo, hi = (int(idx.min()), int(idx.max())) if idx.size else (0, 0)
            raise DataFormatError(
                f"{path}: {field} spans [{lo}, {hi}]; expected 1-based indices in [1, {num_images}]"
            )
        out[key] = idx - 1
    if np.intersect1d(out["train"], out["test"]).size:
        raise DataFormatError(f"{path}: trainNdxs and testNdxs overlap; expected disjoint splits")
    return out


class NYUDepthV2(Dataset[dict[str, Any]]):
    """NYU Depth V2 labeled RGB-D pairs with 10-class scene labels, read lazily.

    Parameters
    ----------
    root
        Folder holding ``nyu_depth_v2_labeled.mat`` and ``splits.mat``, either directly or in
        ``<root>/nyu_depth_v2/``. Ignored for a file given by ``mat_path`` / ``splits_path``.
    split
        ``"train"`` (795 images), ``"test"`` (654) or ``"all"`` (1,449; no split file needed).
    image_size
        Side of the square crop (224 in paper 1).
    resize
        Side of the square resize before cropping (256 in paper 1); ``>= image_size``.
    random_crop
        Random crop (train-time augmentation) or centre crop; default: random for
        ``split="train"``, centre otherwise. RGB and depth always get the same crop.
    mat_path, splits_path
        Explicit file paths, overriding ``root``.

    Notes
    -----
    Items are ``{"rgb": float32 [3, S, S] in [0, 1], "depth": float32 [1, S, S] in [0, 1],
    "label": int}`` with depth = metres / 10 clamped to [0, 1] (the labeled set's depths are
    in-painted and lie within 0-10 m). Images are turned from the stored 640 x 480 (W x H)
    to H x W = 480 x 640 before the transforms. The HDF5 file is opened once per process
    (so each ``DataLoader`` worker has its own handle) and only the requested image is read.
    """

    def __init__(
        self,
        root: str | Path | None,
        split: str = "train",
        image_size: int = 224,
        resize: int = 256,
        random_crop: bool | None = None,
        mat_path: str | Path | None = None,
        splits_path: str | Path | None = None,
    ) -> None:
        if split not in NYU_SPLITS:
            raise ValueError(f"NYU Depth V2 split must be one of {NYU_SPLITS}, got {split!r}")
        if not 1 <= image_size <= resize:
            raise ValueError(
                f"image_size must be in [1, resize={resize}], got {image_size} (crop <= resize)"
            )
        if root is None and mat_path is None:
            raise ValueError("NYU Depth V2 needs root or mat_path, got neither")
        found = find_nyu_files(root) if root is not None else (Path(), Path())
        self.mat_path = Path(mat_path) if mat_path is not None else found[0]
        if splits_path is not None:
            self.splits_path = Path(splits_path)
        elif root is not None:
            self.splits_path = found[1]
        else:
            self.splits_path = self.mat_path.with_name(SPLITS_NAME)
        self.split = split
        self.classes = list(NYU_CLASSES)
        self.image_size, self.resize = image_size, resize

        num_images, self.scene_types_all = self._read_metadata()
        labels_all = torch.tensor([scene_to_label(s) for s in self.scene_types_all])
        if split == "all":
            indices = np.arange(num_images, dtype=np.int64)
        else:
            indices = read_splits(self.splits_path, num_images)[split]
        self.indices = torch.from_numpy(indices)
        self.labels = labels_all[self.indices].to(torch.int64)
        self.scene_types = [self.scene_types_all[int(i)] for i in self.indices]

        crop = (split == "train") if random_crop is None else random_crop
        self.transform = v2.Compose(
            [
                v2.Resize((resize, resize), antialias=True),
                v2.RandomCrop(image_size) if crop else v2.CenterCrop(image_size),
            ]
        )
        self._h5: h5py.File | None = None
        self._pid = -1

    def _read_metadata(self) -> tuple[int, list[str]]:
        path = self.mat_path
        if not path.is_file():
            raise DataNotFoundError(
                f"NYU Depth V2 file {path} does not exist; expected {MAT_NAME} (2.8 GB, "
                "MATLAB v7.3) in <paths.data_root>/nyu_depth_v2/ (see docs/datasets.md)"
            )
        if not h5py.is_hdf5(str(path)):
            raise DataFormatError(
                f"{path} is not a MATLAB v7.3 (HDF5) file; expected the labeled NYU Depth V2 "
                f"release {MAT_NAME}"
            )
        with h5py.File(path, "r") as f:
            for field in ("images", "depths"):
                if field not in f or not isinstance(f[field], h5py.Dataset):
                    raise DataFormatError(
                        f"{path} has no dataset field {field!r}; expected "
                        "images (N, 3, 640, 480) uint8 and depths (N, 640, 480)"
                    )
            images, depths = f["images"], f["depths"]
            if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
                raise DataFormatError(
                    f"{path}: images is {images.shape} {images.dtype}; expected uint8 "
                    "(N, 3, 640, 480) (MATLAB 480 x 640 x 3 x N)"
                )
            n, _, w, h = images.shape
            if depths.shape != (n, w, h) or depths.dtype.kind != "f":
                raise DataFormatError(
                    f"{path}: depths is {depths.shape} {depths.dtype}; expected float "
                    f"{(n, w, h)} to match images"
                )
            scenes = read_scene_types(f, path)
        if len(scenes) != n:
            raise DataFormatError(
                f"{path}: sceneTypes has {len(scenes)} entries; expected {n} (one per image)"
            )
        return n, scenes

    def _file(self) -> h5py.File:
        pid = os.getpid()
        if self._h5 is None or self._pid != pid:
            self._h5 = h5py.File(self.mat_path, "r")
            self._pid = pid
        return self._h5

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, -1  # h5py handles do not pickle; reopen per worker
        return state

    def close(self) -> None:
        """Close this process's HDF5 handle (it is reopened on the next access)."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def read_raw(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Untransformed item ``index``: uint8 RGB ``[3, H, W]`` and depth in metres ``[1, H, W]``
        (H x W = 480 x 640 for the real file)."""
        i = int(self.indices[index])
        f = self._file()
        rgb = np.ascontiguousarray(np.asarray(f["images"][i]).transpose(0, 2, 1))
        depth = np.ascontiguousarray(np.asarray(f["depths"][i], dtype=np.float32).T)
        return torch.from_numpy(rgb), torch.from_numpy(depth)[None]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rgb_u8, metres = self.read_raw(index)
        depth = (metres / NYU_MAX_DEPTH_M).clamp_(0.0, 1.0)
        rgb_t, depth_t = self.transform(tv_tensors.Image(rgb_u8), tv_tensors.Image(depth))
        return {
            "rgb": rgb_t.as_subclass(torch.Tensor).to(torch.float32).div_(255.0),
            "depth": depth_t.as_subclass(torch.Tensor).to(torch.float32),
            "label": int(self.labels[index]),
        }
