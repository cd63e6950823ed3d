"""Paper 1's data and hyper-parameters on the synthetic RGB-D default, read from the config.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. IV-A: every device observes one modality of the
same scenes; the server holds the labels. These helpers read the composed config (they are
called by the paper-1 factories, :mod:`flwr_semcom.paper1.stage2` and
:mod:`flwr_semcom.paper1.factory`): one modality tensor per device (:func:`load_modality`), the
labels (:func:`load_labels`), the labelled subset (:func:`labelled_subset`), the channel's
arguments (:func:`channel_kwargs`), Stage II's SGD and per-round learning rate
(:func:`make_sgd`, :func:`scheduled_lr`) and the ``split_supervised`` augmentation
(:func:`augment`: flip + padded crop).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from flwr_semcom.rules import ConfigError
from flwr_semcom.split.decoder import set_lr
from flwr_semcom.split.schedule import derive_seed

__all__ = [
    "ANALOG_CHANNELS",
    "augment",
    "channel_kwargs",
    "labelled_subset",
    "load_labels",
    "load_modality",
    "make_sgd",
    "modality_of",
    "num_clients",
    "scheduled_lr",
    "set_lr",
    "validation_split",
]

ANALOG_CHANNELS = ("awgn", "rayleigh", "ideal")
AUG_PAD = 4  # pixels of zero padding for the random crop


def num_clients(cfg: DictConfig) -> int:
    """Number of devices: one per entry of ``data.modalities`` (a modality may repeat)."""
    dpm = int(cfg.data.devices_per_modality)
    if dpm != 1:
        raise ConfigError(
            f"data.devices_per_modality: {dpm} is not supported by the rgbd split tasks; "
            "valid: 1 (list a modality twice in data.modalities for two devices seeing it; "
            "horizontal shards per device, data.partition.vertical_partition, are not wired)"
        )
    return len(cfg.data.modalities)


def modality_of(cfg: DictConfig, partition_id: int) -> str:
    """The modality observed by partition ``partition_id`` in ``split_supervised`` (one device
    per entry of ``data.modalities``): paper 1's one partition rule,
    :func:`flwr_semcom.paper1.data.partition_role`, with D = 1."""
    from flwr_semcom.paper1.data import partition_role  # data imports this module

    num_clients(cfg)  # D must be 1
    return partition_role([str(m) for m in cfg.data.modalities], 1, partition_id)[0]


def augment(x: torch.Tensor, seed: int, pad: int = AUG_PAD) -> torch.Tensor:
    """Random horizontal flip and random crop (zero padding ``pad``), drawn from ``seed``.

    The draws depend only on ``seed`` and the batch size, so the RGB and depth views of a
    batch get the same flips and crops.
    """
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=g)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


def _check_data(cfg: DictConfig) -> None:
    if cfg.data.name != "synthetic_rgbd":
        raise ConfigError(
            f"data.name: {cfg.data.name!r} is not supported by the rgbd split tasks; "
            "valid: 'synthetic_rgbd'"
        )


def _generate(num_samples: int, image_size: int, seed: int) -> Any:
    from flwr_semcom.data.synthetic_rgbd import SyntheticRGBD

    return SyntheticRGBD(num_samples=num_samples, image_size=image_size, seed=seed)


@lru_cache(maxsize=4)
def _modality(num_samples: int, image_size: int, seed: int, modality: str) -> torch.Tensor:
    tensor: torch.Tensor = getattr(_generate(num_samples, image_size, seed), modality)
    return tensor  # the other modality is dropped with the data set object


@lru_cache(maxsize=2)
def _labels(num_samples: int, image_size: int, seed: int) -> tuple[torch.Tensor, int]:
    ds = _generate(num_samples, image_size, seed)
    return ds.labels, int(ds.num_classes)


def load_modality(cfg: DictConfig, modality: str) -> torch.Tensor:
    """The ``[N, C, H, W]`` tensor of one modality (a client keeps only its own)."""
    _check_data(cfg)
    return _modality(int(cfg.data.num_samples), int(cfg.data.image_size), int(cfg.seed), modality)


def load_labels(cfg: DictConfig) -> tuple[torch.Tensor, int]:
    """Labels ``[N]`` and the number of classes of the configured data set (server side)."""
    _check_data(cfg)
    return _labels(int(cfg.data.num_samples), int(cfg.data.image_size), int(cfg.seed))


def labelled_subset(
    ids: torch.Tensor, labels: torch.Tensor, fraction: float, seed: int
) -> torch.Tensor:
    """A stratified subset of ``ids`` with ``fraction`` of each class (at least one each)."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"data.label_fraction: {fraction} out of range; expected (0, 1]")
    if fraction == 1.0:
        return ids.clone()
    g = torch.Generator().manual_seed(derive_seed(seed, "label-fraction"))
    keep: list[torch.Tensor] = []
    y = labels[ids]
    for c in torch.unique(y).tolist():
        members = ids[y == c]
        k = max(1, int(round(members.shape[0] * fraction)))
        keep.append(members[torch.randperm(members.shape[0], generator=g)[:k]])
    return torch.sort(torch.cat(keep)).values


def validation_split(
    train: torch.Tensor, labelled: torch.Tensor, labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation scenes for model selection: ``(val, labelled)`` (both sorted).

    Per class c with n_c training scenes, k_c = max(1, round(n_c · ``fraction``)) scenes are
    drawn (seeded by ``(seed, "val-split")``, a stream no other draw uses) from the training
    scenes *not* labelled for Stage II; ``labelled`` is returned unchanged, so Stage II trains
    on exactly the scenes it trains on without validation. When some class has fewer than k_c
    unlabelled scenes (e.g. ``data.label_fraction`` = 1), the validation scenes are carved out
    of the labelled ones instead (k_c ≤ l_c - 1: every class keeps a labelled scene) and
    ``labelled`` loses them. ``fraction`` 0: no validation scenes.
    """
    if not 0.0 <= fraction <= 0.5:
        raise ConfigError(f"data.val_fraction: {fraction} out of range; expected [0, 0.5]")
    empty = torch.zeros(0, dtype=torch.int64)
    if fraction == 0.0:
        return empty, labelled
    g = torch.Generator().manual_seed(derive_seed(seed, "val-split"))
    is_lab = torch.zeros(int(labels.shape[0]), dtype=torch.bool)
    is_lab[labelled] = True
    y = labels[train]
    classes = torch.unique(y).tolist()
    want = {c: max(1, int(round(int((y == c).sum()) * fraction))) for c in classes}
    pool_of = {c: train[(y == c) & ~is_lab[train]] for c in classes}
    from_labelled = any(pool_of[c].shape[0] < want[c] for c in classes)
    picks: list[torch.Tensor] = []
    for c in classes:
        pool = train[(y == c) & is_lab[train]] if from_labelled else pool_of[c]
        k = min(want[c], pool.shape[0] - 1) if from_labelled else want[c]
        if k < 1:
            raise ConfigError(
                f"data.val_fraction: {fraction} leaves class {c} without a labelled or a "
                "validation scene; raise data.label_fraction or set data.val_fraction: 0"
            )
        picks.append(pool[torch.randperm(pool.shape[0], generator=g)[:k]])
    val = torch.sort(torch.cat(picks)).values
    if from_labelled:
        keep = torch.ones(int(labels.shape[0]), dtype=torch.bool)
        keep[val] = False
        labelled = labelled[keep[labelled]]
    return val, labelled


def channel_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Constructor arguments of the configured analog channel."""
    name = str(cfg.channel.name)
    if name not in ANALOG_CHANNELS:
        raise ConfigError(
            f"channel.name: {name!r} cannot carry analog features; "
            f"valid: {', '.join(ANALOG_CHANNELS)}"
        )
    raw = OmegaConf.to_container(cfg.channel, resolve=True)
    kwargs: dict[str, Any] = {str(k): v for k, v in raw.items()} if isinstance(raw, dict) else {}
    kwargs.pop("name", None)
    snr = kwargs.get("snr_db")
    if isinstance(snr, list):
        raise ConfigError(
            f"channel.snr_db: {snr} is a sweep; a split-learning run trains at one SNR "
            "(run one experiment per SNR)"
        )
    return kwargs


def make_sgd(params: Iterable[nn.Parameter], strategy: DictConfig) -> torch.optim.Optimizer:
    """SGD with the strategy's ``lr``, ``momentum`` and ``weight_decay``."""
    return torch.optim.SGD(
        params,
        lr=float(strategy.lr),
        momentum=float(strategy.momentum),
        weight_decay=float(strategy.weight_decay),
    )


def scheduled_lr(strategy: DictConfig, round_: int) -> float:
    """Learning rate of training round ``round_`` (1-based) under ``strategy.lr_schedule``.

    ``constant``: ``lr``. ``cosine``: ``lr_min + (lr - lr_min) (1 + cos(π (r - 1) / R)) / 2``
    with R = ``strategy.rounds`` (``lr`` in round 1, decaying towards ``lr_min``; one value per
    round, the same on devices and server).
    """
    lr = float(strategy.lr)
    if str(strategy.get("lr_schedule", "constant")) != "cosine":
        return lr
    lo, rounds = float(strategy.get("lr_min", 0.0)), max(int(strategy.rounds), 1)
    t = min(max(int(round_) - 1, 0), rounds - 1) / rounds
    return lo + (lr - lo) * 0.5 * (1.0 + math.cos(math.pi * t))
