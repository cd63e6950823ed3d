"""Paper 1 Stage II on RGB-D scenes: supervised split learning, one device per modality.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. II eq. 1-4 and Sec. III-B eq. 16-17: device m
encodes its view x^m into z^m (encoder → JSCC head, :func:`~flwr_semcom.models.transmitter.
build_transmitter`), sends it over the channel (eq. 2; here simulated on the device, which
then sends the *received* ẑ^m), the server concatenates ẑ = [ẑ^1, …, ẑ^M] (eq. 3), decodes
ŷ = g(ẑ; φ) (eq. 4) and trains with cross-entropy; the gradients ∂L/∂ẑ^m go back.

Client task ``rgbd_supervised``: partition ``p`` observes modality ``cfg.data.modalities[p]``
(any number of devices; a modality may repeat) and loads only that tensor of the synthetic
RGB-D data set; ``data.devices_per_modality`` must be 1. Server task ``rgbd_decoder``:
:class:`~flwr_semcom.models.decoder.ServerDecoder` with SGD, the labels, and the train / test
IDs (a seeded stratified split, then a stratified labelled subset of
``cfg.data.label_fraction``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from flwr_semcom.config import ConfigError
from flwr_semcom.split.schedule import BatchPlan, derive_seed
from flwr_semcom.split.tasks import CLIENT_TASKS, SERVER_TASKS, ClientTask, ServerTask

__all__ = [
    "RGBDClient",
    "RGBDDecoderServer",
    "SplitPipeline",
    "augment",
    "modality_of",
    "scheduled_lr",
    "set_lr",
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
    """The modality observed by partition ``partition_id``: ``data.modalities[partition_id]``."""
    n = num_clients(cfg)
    if not 0 <= partition_id < n:
        raise ConfigError(
            f"partition-id: {partition_id} out of range; data.modalities gives partitions "
            f"0..{n - 1}"
        )
    return str(cfg.data.modalities[partition_id])


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


class SplitPipeline(nn.Module):
    """Transmitter then channel: ``x -> {"z_hat": channel(transmitter(x)["z"])}``."""

    def __init__(self, transmitter: nn.Module, channel: nn.Module) -> None:
        super().__init__()
        self.transmitter = transmitter
        self.channel = channel

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        z = self.transmitter(x)["z"]
        return {"z_hat": self.channel(z, generator=generator)}


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


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


@CLIENT_TASKS.register("rgbd_supervised")
class RGBDClient(ClientTask):
    """One RGB-D device in Stage II: its modality's transmitter and the channel."""

    def __init__(self, cfg: DictConfig, node_config: Mapping[str, Any]) -> None:
        from flwr_semcom.channels import build_channel
        from flwr_semcom.models.transmitter import build_transmitter

        if "partition-id" not in node_config:
            raise ConfigError("node_config: missing 'partition-id' (an integer >= 0)")
        self.partition_id = int(node_config["partition-id"])
        self.role = modality_of(cfg, self.partition_id)
        self.cfg = cfg
        torch.manual_seed(derive_seed(int(cfg.seed), "client-init", self.partition_id))
        transmitter = build_transmitter(
            self.role, str(cfg.model.encoder), int(cfg.data.image_size), int(cfg.model.num_symbols)
        )
        channel = build_channel(str(cfg.channel.name), **channel_kwargs(cfg))
        self.model = SplitPipeline(transmitter, channel)
        self.data = load_modality(cfg, self.role)
        self.augment = bool(cfg.strategy.get("augment", True))

    def inputs(self, batch: BatchPlan, train: bool) -> tuple[torch.Tensor, ...]:
        if int(batch.ids.max()) >= self.data.shape[0] or int(batch.ids.min()) < 0:
            raise ValueError(
                f"plan: sample IDs out of range [0, {self.data.shape[0]}) for {self.role}"
            )
        x = self.data[batch.ids]
        if train and self.augment:
            x = augment(x, batch.aug_seed)
        return (x,)

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return make_sgd(params, self.cfg.strategy)

    def round_lr(self, round_: int) -> float | None:
        return scheduled_lr(self.cfg.strategy, round_)

    def sample_ids(self) -> torch.Tensor:
        """Every scene of the modality tensor (``0..N-1``); all devices must agree."""
        return torch.arange(self.data.shape[0])


def decoder_cross_entropy(
    decoder: nn.Module,
    labels: torch.Tensor,
    uplinks: Sequence[Mapping[str, torch.Tensor]],
    batch: BatchPlan,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Paper 1 eq. 16: cross-entropy of g(concat ẑ) with counts for accuracy and mean loss."""
    logits = decoder([u["z_hat"] for u in uplinks])["logits"]
    y = labels[batch.ids]
    loss = F.cross_entropy(logits, y)
    n = int(y.shape[0])
    correct = int((logits.argmax(1) == y).sum())
    return loss, {"n": float(n), "correct": float(correct), "loss_sum": float(loss.detach()) * n}


@SERVER_TASKS.register("rgbd_decoder")
class RGBDDecoderServer(ServerTask):
    """The server of Stage II: decoder g on concatenated ẑ, cross-entropy (eq. 3-4, 16)."""

    client_task = "rgbd_supervised"

    def __init__(self, cfg: DictConfig) -> None:
        from flwr_semcom.data.splits import stratified_split
        from flwr_semcom.models.decoder import ServerDecoder

        self.num_clients = num_clients(cfg)
        labels, num_classes = load_labels(cfg)
        self.labels = labels
        train, test = stratified_split(labels, float(cfg.data.test_fraction), int(cfg.seed))
        self.train_ids = labelled_subset(
            train, labels, float(cfg.data.label_fraction), int(cfg.seed)
        )
        self.test_ids = test
        hidden = cfg.model.get("decoder_hidden")
        in_dim = 2 * int(cfg.model.num_symbols) * self.num_clients
        torch.manual_seed(derive_seed(int(cfg.seed), "server-init"))
        self.model = ServerDecoder(in_dim, num_classes, None if hidden is None else int(hidden))
        self.optimizer = make_sgd(self.model.parameters(), cfg.strategy)
        self.strategy_cfg = cfg.strategy

    def start_round(self, round_: int) -> None:
        set_lr(self.optimizer, scheduled_lr(self.strategy_cfg, round_))

    def loss(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]], batch: BatchPlan
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return decoder_cross_entropy(self.model, self.labels, uplinks, batch)
