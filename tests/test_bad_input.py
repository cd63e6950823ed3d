"""Bad-input catalogue (issue #9, item 3): every case fails in one line naming the key or file
and the valid range, and leaves no partial result.

:data:`CATALOGUE` is the table of docs/reliability.md ("Bad input"): each case is a callable
that must raise, the exception type, and the substrings its message must contain (the key or
file, and what is valid). Further tests check that the CLI exits 2 with one line on stderr
before any Flower process starts and without creating an output folder, and that writers
leave no file behind when they fail. The boundaries of every config key (smallest and largest
valid value, nearest invalid values) are tested in tests/test_config_boundaries.py.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from _procs import run_launcher  # tests/ is on sys.path
from torch import nn

from flwr_semcom.accounting import atomic_write
from flwr_semcom.checkpoint import CheckpointError, safe_load_state
from flwr_semcom.config import (
    RULES,
    ConfigError,
    compose_config,
    config_from_run_config,
    resolve_device,
)
from flwr_semcom.data import DataFormatError, DataNotFoundError
from flwr_semcom.data.idx import MNIST_IMAGES_MAGIC, read_idx
from flwr_semcom.data.partition import check_alignment, ids_fingerprint, label_fraction_subset

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One bad input: ``run(tmp_path)`` must raise ``exc`` with all of ``expect`` in its text."""

    name: str
    run: Callable[[Path], Any]
    exc: type[BaseException]
    expect: tuple[str, ...]


def _compose(experiment: str, overrides: str) -> Callable[[Path], Any]:
    return lambda _tmp: compose_config(experiment, overrides)


def _slf(overrides: str) -> Callable[[Path], Any]:
    def run(_tmp: Path) -> None:
        from flwr_semcom.slf.settings import check_slf_config

        check_slf_config(compose_config("slf_table1", overrides))

    return run


def _idx(raw: bytes, name: str = "images.idx") -> Callable[[Path], Any]:
    def run(tmp: Path) -> None:
        (tmp / name).write_bytes(raw)
        read_idx(tmp / name, MNIST_IMAGES_MAGIC)

    return run


def _header(magic: int, *dims: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


def _mat_without_scene_types(tmp: Path) -> None:
    from flwr_semcom.data.nyu import NYUDepthV2

    path = tmp / "nyu_depth_v2_labeled.mat"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 3, 8, 6), np.uint8))
        f.create_dataset("depths", data=np.ones((2, 8, 6), np.float32))
    NYUDepthV2(None, split="all", image_size=4, resize=4, mat_path=path)


def _mat_missing(tmp: Path) -> None:
    from flwr_semcom.data.nyu import NYUDepthV2

    NYUDepthV2(tmp, split="all", image_size=4, resize=4)


def _splits_without_test(tmp: Path) -> None:
    from flwr_semcom.data.nyu import read_splits

    scipy.io.savemat(str(tmp / "splits.mat"), {"trainNdxs": np.arange(1, 5)[:, None]})
    read_splits(tmp / "splits.mat", 10)


def _splits_out_of_range(tmp: Path) -> None:
    from flwr_semcom.data.nyu import read_splits

    scipy.io.savemat(
        str(tmp / "splits.mat"),
        {"trainNdxs": np.arange(1, 5)[:, None], "testNdxs": np.arange(5, 13)[:, None]},
    )
    read_splits(tmp / "splits.mat", 10)


def _mismatched_ids(_tmp: Path) -> None:
    check_alignment(
        {"rgb-0": ids_fingerprint(np.arange(100)), "depth-0": ids_fingerprint(np.arange(1, 101))}
    )


def _checkpoint_of_another_shape(tmp: Path) -> None:
    torch.save(nn.Linear(4, 3).state_dict(), tmp / "encoder.pt")
    safe_load_state(tmp / "encoder.pt", nn.Linear(4, 5))


def _checkpoint_of_another_architecture(tmp: Path) -> None:
    torch.save(nn.Sequential(nn.Linear(4, 3)).state_dict(), tmp / "encoder.pt")
    safe_load_state(tmp / "encoder.pt", nn.Linear(4, 3))


def _corrupt_checkpoint(tmp: Path) -> None:
    (tmp / "encoder.pt").write_bytes(b"this is not a checkpoint")
    safe_load_state(tmp / "encoder.pt", nn.Linear(4, 3))


def _slf_cache_of_another_shape(tmp: Path) -> None:
    """A cache file whose name matches the spec but whose weights are another model's."""
    from flwr_semcom.slf.cache import checkpoint_path, load_or_train

    spec = {"name": "T1"}
    torch.save(nn.Linear(2, 3).state_dict(), checkpoint_path(tmp, "transceiver", spec))
    load_or_train(tmp, "transceiver", spec, lambda: nn.Linear(2, 2), lambda m: {})


def _no_gpu(_tmp: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    resolve_device("cuda:0")


def _label_fraction(fraction: float) -> Callable[[Path], Any]:
    def run(_tmp: Path) -> None:
        label_fraction_subset(torch.arange(20) % 2, fraction, seed=0)

    return run


def _partition_out_of_range(_tmp: Path) -> None:
    from flwr_semcom.paper1.rgbd import modality_of

    modality_of(compose_config("split_supervised"), 5)


CATALOGUE: list[Case] = [
    # ---- config values (composed from conf/ with hydra overrides)
    Case(
        "seed < 0",
        _compose("split_supervised", "seed=-1"),
        ConfigError,
        ("seed:", "[0, 2147483647]"),
    ),
    Case(
        "snr not finite",
        _compose("split_supervised", "channel.snr_db=nan"),
        ConfigError,
        ("channel.snr_db:", "finite number of dB"),
    ),
    Case(
        "threads 0",
        _compose("split_supervised", "num_threads=0"),
        ConfigError,
        ("num_threads:", "[1, 256]"),
    ),
    Case(
        "device name",
        _compose("split_supervised", "device=gpu"),
        ConfigError,
        ("device:", "'cuda:N'"),
    ),
    Case(
        "crossover > 1",
        _compose("split_supervised", "channel=dmc channel.crossover=1.5"),
        ConfigError,
        ("channel.crossover:", "[0, 1]"),
    ),
    Case(
        "label fraction 0",
        _compose("split_supervised", "data.label_fraction=0"),
        ConfigError,
        ("data.label_fraction:", "(0, 1]"),
    ),
    Case(
        "label fraction > 1",
        _compose("split_supervised", "data.label_fraction=1.5"),
        ConfigError,
        ("data.label_fraction:", "(0, 1]"),
    ),
    Case(
        "steps per message 0",
        _compose("split_supervised", "strategy.steps_per_message=0"),
        ConfigError,
        ("strategy.steps_per_message:", "[1, 100000]"),
    ),
    Case(
        "steps per message < 0",
        _compose("split_supervised", "strategy.steps_per_message=-2"),
        ConfigError,
        ("strategy.steps_per_message:", "[1, 100000]"),
    ),
    Case(
        "Stage I steps per message 0",
        _compose("multimodal", "pretrain.steps_per_message=0"),
        ConfigError,
        ("pretrain.steps_per_message:", "[1, 100000]"),
    ),
    Case(
        "lr 0",
        _compose("split_supervised", "strategy.lr=0"),
        ConfigError,
        ("strategy.lr:", "(0, 100]"),
    ),
    Case(
        "momentum 1",
        _compose("split_supervised", "strategy.momentum=1.0"),
        ConfigError,
        ("strategy.momentum:", "[0, 1)"),
    ),
    Case(
        "batch of 1",
        _compose("split_supervised", "strategy.batch_size=1"),
        ConfigError,
        ("strategy.batch_size:", "[2, 1000000]"),
    ),
    Case(
        "SLF batch of 1 (its own range, not split's)",
        _compose("slf_table1", "strategy.batch_size=1"),
        ConfigError,
        ("strategy.batch_size:", "[2, 65536]"),
    ),
    Case(
        "strategy.name against the selected group",
        _compose("slf_table1", "strategy.name=split"),
        ConfigError,
        ("strategy.name:", "'slf'", "strategy=NAME"),
    ),
    Case(
        "test part of every sample",
        _compose("split_supervised", "data.test_fraction=1"),
        ConfigError,
        ("data.test_fraction:", "(0, 1)"),
    ),
    Case(
        "empty data root",
        _compose("split_supervised", "paths.data_root=''"),
        ConfigError,
        ("paths.data_root:", "non-empty"),
    ),
    Case(
        "SNR list outside multitask",
        _compose("split_supervised", "channel.snr_db=[0.0,10.0]"),
        ConfigError,
        ("channel.snr_db:", "finite number of dB", "multitask only"),
    ),
    Case(
        "image size",
        _compose("split_supervised", "data.image_size=4"),
        ConfigError,
        ("data.image_size:", "[8, 512]"),
    ),
    Case(
        "unknown modality",
        _compose("split_supervised", "data.modalities=[rgb,lidar]"),
        ConfigError,
        ("data.modalities:", "'rgb' / 'depth'"),
    ),
    Case(
        "unknown encoder",
        _compose("split_supervised", "model.encoder=vgg16"),
        ConfigError,
        ("model.encoder:", "'resnet18', 'small_cnn'"),
    ),
    Case(
        "symbols 0",
        _compose("split_supervised", "model.num_symbols=0"),
        ConfigError,
        ("model.num_symbols:", "[1, 65536]"),
    ),
    Case(
        "unknown SSL method",
        _compose("multimodal", "pretrain.method=byol"),
        ConfigError,
        ("pretrain.method:", "'decur', 'barlow_twins', 'simclr', 'none'"),
    ),
    Case(
        "augment hue",
        _compose("multimodal", "pretrain.augment.hue=0.9"),
        ConfigError,
        ("pretrain.augment.hue:", "[0, 0.5]"),
    ),
    Case(
        "impossible placement",
        _compose("multimodal", "pretrain.method=decur pretrain.placement=local"),
        ConfigError,
        ("pretrain.placement:", "valid: auto, split, server"),
    ),
    Case(
        "freeze depth beyond the model",
        _compose("slf_table1", "strategy.freeze_layers=[0,9]"),
        ConfigError,
        ("strategy.freeze_layers:", "[0, 4]"),
    ),
    Case(
        "unknown transceiver",
        _slf("strategy.cases.channel.transmitter=T9"),
        ConfigError,
        ("strategy.cases.channel.transmitter:", "valid names: T1, T2, T3"),
    ),
    Case(
        "SLF on an analog channel",
        _slf("channel=awgn"),
        ConfigError,
        ("channel.name:", "expected 'dmc'"),
    ),
    # ---- unknown names
    Case(
        "unknown key",
        _compose("split_supervised", "strategy.lr_typo=1"),
        ConfigError,
        ("strategy.lr_typo:", "unknown config key"),
    ),
    Case(
        "unknown group option",
        _compose("split_supervised", "channel=laser"),
        ConfigError,
        ("channel:", "valid names: awgn, dmc, ideal, rayleigh"),
    ),
    Case(
        "unknown experiment",
        _compose("nope", ""),
        ConfigError,
        ("experiment:", "valid names:", "split_supervised"),
    ),
    Case(
        "unknown run-config key",
        lambda _tmp: config_from_run_config(
            {"experiment": "split_supervised", "learning-rate": 0.1}
        ),
        ConfigError,
        ("run config:", "unknown key(s) learning-rate", "valid keys: experiment, overrides"),
    ),
    # ---- devices
    Case("cuda without a GPU", _no_gpu, ConfigError, ("device:", "valid here: 'auto', 'cpu'")),
    Case(
        "partition beyond the modalities",
        _partition_out_of_range,
        ConfigError,
        ("partition-id:", "partitions 0..1"),
    ),
    # ---- label fraction reaching the data layer directly
    Case("label subset 0", _label_fraction(0.0), ValueError, ("label_fraction", "(0, 1]")),
    # ---- data files
    Case(
        "IDX wrong magic",
        _idx(_header(0x00000801, 2) + b"\x00\x01"),
        DataFormatError,
        ("images.idx", "magic 0x00000801", "expected 0x00000803"),
    ),
    Case(
        "IDX not IDX",
        _idx(b"PK\x03\x04garbage"),
        DataFormatError,
        ("images.idx", "magic 0x504B0304", "expected 0x00000803"),
    ),
    Case(
        "IDX truncated",
        _idx(_header(MNIST_IMAGES_MAGIC, 2, 28, 28) + bytes(100)),
        DataFormatError,
        ("images.idx", "holds 100 data bytes", "expected 1568"),
    ),
    Case(
        "IDX corrupt gzip",
        _idx(gzip.compress(_header(MNIST_IMAGES_MAGIC, 1, 1, 1) + b"\x00")[:-6], "x.idx.gz"),
        DataFormatError,
        ("x.idx.gz", "corrupt gzip"),
    ),
    Case(
        "IDX missing",
        lambda tmp: read_idx(tmp / "t10k-images-idx3-ubyte.gz"),
        DataNotFoundError,
        ("t10k-images-idx3-ubyte.gz", "does not exist", "<paths.data_root>/mnist/"),
    ),
    Case(
        ".mat without sceneTypes",
        _mat_without_scene_types,
        DataFormatError,
        ("nyu_depth_v2_labeled.mat", "no field 'sceneTypes'", "expected a cell array"),
    ),
    Case(
        ".mat missing",
        _mat_missing,
        DataNotFoundError,
        ("nyu_depth_v2_labeled.mat", "does not exist", "paths.data_root"),
    ),
    Case(
        "splits.mat without testNdxs",
        _splits_without_test,
        DataFormatError,
        ("splits.mat", "no field 'testNdxs'", "expected trainNdxs and testNdxs"),
    ),
    Case(
        "splits.mat index beyond the images",
        _splits_out_of_range,
        DataFormatError,
        ("splits.mat", "testNdxs spans [5, 12]", "[1, 10]"),
    ),
    # ---- alignment across modality devices
    Case(
        "mismatched sample IDs",
        _mismatched_ids,
        ValueError,
        ("not aligned across devices", "depth-0", "rgb-0", "expected every device"),
    ),
    # ---- checkpoints
    Case(
        "checkpoint of another shape",
        _checkpoint_of_another_shape,
        CheckpointError,
        ("encoder.pt", "'weight'", "(3, 4)", "expects (5, 4)"),
    ),
    Case(
        "checkpoint of another architecture",
        _checkpoint_of_another_architecture,
        CheckpointError,
        ("encoder.pt", "'weight' is missing", "expected shape (3, 4)"),
    ),
    Case(
        "corrupt checkpoint",
        _corrupt_checkpoint,
        CheckpointError,
        ("encoder.pt", "not a torch state dict", "delete it to retrain"),
    ),
    Case(
        "SLF cache of another shape",
        _slf_cache_of_another_shape,
        CheckpointError,
        ("transceiver-", ".pt", "'weight'", "expects (2, 2)"),
    ),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.name for c in CATALOGUE])
def test_catalogue_case_fails_in_one_line_naming_key_and_range(case: Case, tmp_path: Path) -> None:
    with pytest.raises(case.exc) as info:
        case.run(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg.strip(), msg
    for part in case.expect:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_catalogue_is_large_enough() -> None:
    assert len({c.name for c in CATALOGUE}) == len(CATALOGUE) >= 30


# --------------------------------------------------------------- rule descriptions
# The boundaries of every config key (accepted and refused values, written from
# docs/config.md) are tested in tests/test_config_boundaries.py.
def test_name_rules_match_the_registries_and_conf() -> None:
    from flwr_semcom.models.encoders import ENCODER_NAMES
    from flwr_semcom.paper1.settings import METHODS

    assert RULES["model.encoder"].valid == "one of " + ", ".join(map(repr, ENCODER_NAMES))
    for group in ("data", "strategy"):
        names = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
        assert RULES[f"{group}.name"].valid == "one of " + ", ".join(map(repr, names))
    assert RULES["pretrain.method"].valid == "one of " + ", ".join(map(repr, METHODS))


# --------------------------------------------------------------- the split runtime refuses
def test_split_runtime_refuses_devices_with_mismatched_sample_ids(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flwr_semcom.client_app import app as client_app
    from flwr_semcom.inprocess import InProcessGrid
    from flwr_semcom.split.device import DeviceTask
    from simulations.experiments.split_supervised import run

    overrides = (
        "data.num_samples=40 data.image_size=8 model.num_symbols=4 strategy.rounds=1 "
        f"paths.output_dir={tmp_path}"
    )
    original = DeviceTask.sample_ids

    def fewer_depth_scenes(self: DeviceTask) -> torch.Tensor | None:
        ids = original(self)
        return ids[:-1] if ids is not None and self.role == "depth" else ids

    monkeypatch.setattr(DeviceTask, "sample_ids", fewer_depth_scenes)
    nodes = [{"partition-id": i, "num-partitions": 2} for i in range(2)]
    grid = InProcessGrid(
        client_app, nodes, {"experiment": "split_supervised", "overrides": overrides}
    )
    with pytest.raises(ValueError) as info:
        run(grid, compose_config("split_supervised", overrides), grid.server_context())
    msg = str(info.value)
    assert "\n" not in msg
    assert "not aligned across devices" in msg and "depth-1 (node 1001)" in msg
    assert "rgb-0 (node 1000)" in msg


# --------------------------------------------------------------- no partial results
def test_a_failing_writer_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write('{"half": ')
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


_launch = functools.partial(run_launcher, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("--overrides", "strategy.steps_per_message=0"),
            "error: strategy.steps_per_message: invalid value 0; expected an integer in "
            "[1, 100000]",
        ),
        (
            ("--experiment", "slf_table1", "--overrides", "strategy.freeze_layers=[2,9]"),
            "error: strategy.freeze_layers: freeze_layers (n) must be in [0, 4] for this "
            "transceiver, got 9",
        ),
        (("--num-gpus", "1"), "error: --num-gpus=1 requested but torch sees no CUDA GPU"),
    ],
    ids=["steps-per-message", "freeze-depth", "num-gpus"],
)
def test_cli_exits_2_with_one_line_and_creates_nothing(
    args: tuple[str, ...], line: str, tmp_path: Path
) -> None:
    if "--num-gpus" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out, home = tmp_path / "outputs", tmp_path / "flwr-home"
    overrides = f"paths.output_dir={out}"
    if "--overrides" in args:
        i = args.index("--overrides")
        args = (*args[:i], "--overrides", f"{args[i + 1]} {overrides}", *args[i + 2 :])
    else:
        args = (*args, "--overrides", overrides)
    res = _launch(*args, "--flwr-home", str(home))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), res.stderr
    assert "SuperLink" not in res.stdout  # refused before any Flower process started
    assert not out.exists() and not home.exists()  # no results folder, no Flower home
