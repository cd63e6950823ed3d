"""Sample IDs of paper 1's two stages on the synthetic RGB-D default.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. IV-A / Fig. 5: a labelled training set, of which
a fraction keeps its labels (``data.label_fraction``); Stage I is label-free, so it uses
**every** training scene (labelled or not), Stage II only the labelled ones. The split and the
labelled subset come from paper 1's RGB-D helpers (:mod:`flwr_semcom.paper1.rgbd`: seeded stratified
split, then a stratified subset), so Stage II here sees exactly the scenes of the
``split_supervised`` experiment. The validation scenes (``data.val_fraction``, model selection
only; :func:`~flwr_semcom.paper1.rgbd.validation_split`) are training scenes not labelled for
Stage II, so Stage II trains on the same scenes with or without them (unless too few scenes
are unlabelled, e.g. ``data.label_fraction`` 1: then they leave the labelled set). With
``data.devices_per_modality`` = D > 1 the training IDs are cut into D aligned shards
(:func:`flwr_semcom.data.partition.vertical_partition`): devices ``rgb-k`` and ``depth-k``
hold shard k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from flwr_semcom.data.partition import vertical_partition
from flwr_semcom.data.splits import stratified_split
from flwr_semcom.paper1.rgbd import labelled_subset, load_labels, validation_split
from flwr_semcom.rules import ConfigError

__all__ = [
    "StageIds",
    "device_modality",
    "num_devices",
    "partition_role",
    "shard_of",
    "stage_ids",
    "val_fraction",
]


@dataclass(frozen=True)
class StageIds:
    """Training (all, label-free), labelled training and test IDs, the shards and the
    validation IDs (empty with ``data.val_fraction`` 0).

    ``shards[k]`` are the training IDs of devices ``rgb-k`` / ``depth-k`` and
    ``labelled_shards[k]`` their labelled part.
    """

    train: torch.Tensor
    labelled: torch.Tensor
    test: torch.Tensor
    shards: list[torch.Tensor]
    labelled_shards: list[torch.Tensor]
    val: torch.Tensor


def stage_ids(cfg: DictConfig) -> StageIds:
    """The IDs of both stages for the configured data set and seed."""
    labels, _ = load_labels(cfg)
    seed = int(cfg.seed)
    train, test = stratified_split(labels, float(cfg.data.test_fraction), seed)
    labelled = labelled_subset(train, labels, float(cfg.data.label_fraction), seed)
    val, labelled = validation_split(train, labelled, labels, val_fraction(cfg), seed)
    dpm = int(cfg.data.devices_per_modality)
    parts = vertical_partition(train, list(cfg.data.modalities), dpm, seed)
    shards = [next(p.ids for p in parts if p.shard == k) for k in range(dpm)]
    lab = set(labelled.tolist())
    labelled_shards = [
        torch.tensor([i for i in s.tolist() if i in lab], dtype=torch.int64) for s in shards
    ]
    return StageIds(train, labelled, test, shards, labelled_shards, val)


def val_fraction(cfg: DictConfig) -> float:
    """``data.val_fraction`` (0 when absent: no validation scenes)."""
    return float(cfg.data.get("val_fraction", 0.0) or 0.0)


def num_devices(cfg: DictConfig) -> int:
    """Devices of paper 1: ``len(data.modalities) × data.devices_per_modality``."""
    return len(cfg.data.modalities) * int(cfg.data.devices_per_modality)


def partition_role(
    modalities: Sequence[str], devices_per_modality: int, partition_id: int
) -> tuple[str, int]:
    """The one partition → device rule of paper 1: ``(modality, shard)`` of a partition.

    Partitions ``m·D .. m·D + D - 1`` observe modality ``modalities[m]`` (D =
    ``devices_per_modality``); partition ``p`` holds shard ``p mod D`` (device
    ``<modality>-<shard>``). With D = 1, partition ``p`` observes ``modalities[p]``.

    Raises
    ------
    ConfigError
        When ``partition_id`` is outside ``0 .. len(modalities)·D - 1``.
    """
    d = int(devices_per_modality)
    n = len(modalities) * d
    if not 0 <= partition_id < n:
        raise ConfigError(
            f"partition-id: {partition_id} out of range; data.modalities × "
            f"data.devices_per_modality gives partitions 0..{n - 1}"
        )
    return str(modalities[partition_id // d]), partition_id % d


def device_modality(cfg: DictConfig, partition_id: int) -> str:
    """The modality of a partition (:func:`partition_role` with the configured data)."""
    return shard_of(cfg, partition_id)[0]


def shard_of(cfg: DictConfig, partition_id: int) -> tuple[str, int]:
    """``(modality, shard)`` of a partition (:func:`partition_role` with the configured data)."""
    return partition_role(
        list(cfg.data.modalities), int(cfg.data.devices_per_modality), partition_id
    )
