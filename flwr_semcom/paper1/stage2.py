"""Paper 1 Stage II as the split runtime's generic :class:`~flwr_semcom.split.DeviceTask` and
:class:`~flwr_semcom.split.DecoderServer`, configured from the composed config.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. II eq. 1-4 and Sec. III-B eq. 16-17: device m
encodes its view x^m into z^m (encoder → JSCC head), the channel delivers ẑ^m (eq. 2,
simulated on the device), the server decodes ŷ = g(concat ẑ) (eq. 3-4) with cross-entropy
(eq. 16) and returns ∂L/∂ẑ^m (eq. 17). Two configurations:

- ``split_supervised`` (:func:`supervised_device` / :func:`supervised_server`; client task
  ``rgbd_supervised``): Stage II from scratch, partition p observes ``data.modalities[p]``,
  flip + padded crop augmentation (:func:`flwr_semcom.paper1.rgbd.augment`);
- the paper-1 runs (:func:`finetune_device` / :func:`finetune_server`; client task
  ``p1_finetune``): ``model.widths`` for the small encoder, the Stage I initial encoder (so the
  supervised baseline starts where every method starts Stage I), random resized crops, shard
  training IDs, a decoder that shards can share, and the stability checks of
  :class:`Stage2Server` (non-finite loss, uplink or gradient stops the method, naming method,
  stage and round; gradient norms are kept per round).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from flwr_semcom.channels import build_channel
from flwr_semcom.models.decoder import ServerDecoder
from flwr_semcom.models.transmitter import build_transmitter
from flwr_semcom.paper1.augment import AugmentConfig, augment_view
from flwr_semcom.paper1.data import device_modality, stage_ids, val_fraction
from flwr_semcom.paper1.models import build_ssl_transmitter
from flwr_semcom.paper1.progress import Progress
from flwr_semcom.paper1.rgbd import (
    augment,
    channel_kwargs,
    labelled_subset,
    load_labels,
    load_modality,
    make_sgd,
    modality_of,
    num_clients,
    scheduled_lr,
    validation_split,
)
from flwr_semcom.paper1.settings import encoder_kwargs, ssl_settings
from flwr_semcom.rules import resolve_device
from flwr_semcom.split import DecoderServer, DeviceTask, ServerStep
from flwr_semcom.split.schedule import BatchPlan, derive_seed

__all__ = [
    "FINETUNE_CLIENT_TASK",
    "SUPERVISED_CLIENT_TASK",
    "Stage2Server",
    "finetune_device",
    "finetune_server",
    "supervised_device",
    "supervised_server",
]

SUPERVISED_CLIENT_TASK = "rgbd_supervised"
FINETUNE_CLIENT_TASK = "p1_finetune"


def _device(cfg: DictConfig) -> torch.device:
    return torch.device(resolve_device(str(cfg.get("device", "cpu"))))


def _decoder(cfg: DictConfig, clients: int, num_classes: int) -> ServerDecoder:
    hidden = cfg.model.get("decoder_hidden")
    in_dim = 2 * int(cfg.model.num_symbols) * clients
    torch.manual_seed(derive_seed(int(cfg.seed), "server-init"))
    return ServerDecoder(in_dim, num_classes, None if hidden is None else int(hidden))


def _sgd(cfg: DictConfig) -> Any:
    return partial(make_sgd, strategy=cfg.strategy)


def _device_task(
    cfg: DictConfig,
    role: str,
    transmitter: nn.Module,
    channel: nn.Module,
    train_augment: Callable[[torch.Tensor, int], torch.Tensor],
    *,
    report_ids: bool,
) -> DeviceTask:
    """The device's :class:`DeviceTask` on its modality's tensor, with the Stage II SGD and
    per-round lr (``strategy.augment`` false: no training augmentation)."""
    task = DeviceTask(
        transmitter,
        load_modality(cfg, role),
        channel=channel,
        optimizer=_sgd(cfg),
        augment=train_augment if bool(cfg.strategy.get("augment", True)) else None,
        lr_schedule=partial(scheduled_lr, cfg.strategy),
        role=role,
        report_ids=report_ids,
    )
    task.model.to(_device(cfg))
    return task


def supervised_device(cfg: DictConfig, partition_id: int) -> DeviceTask:
    """The device of partition ``partition_id`` in ``split_supervised`` (modality
    ``data.modalities[partition_id]``; encoder and head seeded by ``(seed, "client-init", p)``)."""
    role = modality_of(cfg, partition_id)
    torch.manual_seed(derive_seed(int(cfg.seed), "client-init", partition_id))
    transmitter = build_transmitter(
        role, str(cfg.model.encoder), int(cfg.data.image_size), int(cfg.model.num_symbols)
    )
    channel = build_channel(str(cfg.channel.name), **channel_kwargs(cfg))
    return _device_task(cfg, role, transmitter, channel, augment, report_ids=True)


def supervised_server(cfg: DictConfig) -> DecoderServer:
    """The server of ``split_supervised``: decoder g on concat ẑ with SGD, the labels, the
    train IDs (a stratified labelled subset of ``data.label_fraction`` of the seeded stratified
    training split), the test IDs and the validation IDs (``data.val_fraction``,
    :func:`~flwr_semcom.paper1.rgbd.validation_split`)."""
    from flwr_semcom.data.splits import stratified_split

    clients = num_clients(cfg)
    labels, num_classes = load_labels(cfg)
    seed = int(cfg.seed)
    train, test = stratified_split(labels, float(cfg.data.test_fraction), seed)
    labelled = labelled_subset(train, labels, float(cfg.data.label_fraction), seed)
    val, labelled = validation_split(train, labelled, labels, val_fraction(cfg), seed)
    decoder = _decoder(cfg, clients, num_classes)
    server = DecoderServer(
        decoder,
        labels,
        train_ids=labelled,
        test_ids=test,
        val_ids=val,
        num_clients=clients,
        optimizer=make_sgd(decoder.parameters(), cfg.strategy),
        lr_schedule=partial(scheduled_lr, cfg.strategy),
    )
    server.model.to(_device(cfg))
    return server


def finetune_device(cfg: DictConfig, partition_id: int) -> DeviceTask:
    """A paper-1 Stage II device: transmitter (encoder + JSCC head) then the channel (eq. 1-2).

    The random initial encoder is ``build_ssl_transmitter``'s (seeded by modality, so the
    supervised baseline starts from the encoder every method starts Stage I from); the JSCC
    head is seeded by ``(seed, "p1-head", modality)``. Training batches get a random resized
    crop and flip (paper 1 Sec. IV-A), the same for every modality of a batch.
    """
    role = device_modality(cfg, partition_id)
    transmitter = build_transmitter(
        role,
        str(cfg.model.encoder),
        int(cfg.data.image_size),
        int(cfg.model.num_symbols),
        encoder_kwargs=encoder_kwargs(cfg),
    )
    torch.manual_seed(derive_seed(int(cfg.seed), "p1-head", role))
    transmitter.head.linear.reset_parameters()
    init = build_ssl_transmitter(ssl_settings(cfg), role)
    transmitter.encoder.load_state_dict(init.encoder.state_dict())
    channel = build_channel(str(cfg.channel.name), **channel_kwargs(cfg))
    crop = float(cfg.get("finetune", {}).get("crop_scale_min", 0.6))
    geometry = AugmentConfig(crop_scale_min=crop, jitter_p=0.0, grayscale_p=0.0, depth_noise_p=0.0)

    def crops(x: torch.Tensor, seed: int) -> torch.Tensor:
        return augment_view(x, role, seed, "a", geometry)

    return _device_task(cfg, role, transmitter, channel, crops, report_ids=False)


class Stage2Server(Progress, DecoderServer):
    """:class:`DecoderServer` with paper 1's stability checks and per-round gradient norms.

    Takes :class:`DecoderServer`'s arguments and ``method`` (named in error messages).
    """

    def __init__(self, *args: Any, method: str = "?", **kwargs: Any) -> None:
        DecoderServer.__init__(self, *args, **kwargs)
        self.init_progress(method, "finetune")

    def start_round(self, round_: int) -> None:
        """Per-round norms (see :class:`~flwr_semcom.paper1.progress.Progress`) and the
        round's learning rate."""
        Progress.start_round(self, round_)
        DecoderServer.start_round(self, round_)

    def train_step(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]], batch: BatchPlan
    ) -> ServerStep:
        """One decoder step; stops on a non-finite uplink, loss or gradient."""
        leaves = self._uplink_leaves(uplinks)
        self.model.train()
        loss, stats = self.loss(leaves, batch)
        self._check_loss(loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sq = 0.0
        for p in self.model.parameters():
            if p.grad is not None:
                sq += float(p.grad.detach().double().pow(2).sum())
        if not math.isfinite(sq):
            raise self._fail("decoder gradient")
        self.grad_norms.append(math.sqrt(sq))
        grads = self._uplink_grads(leaves)
        self.optimizer.step()
        return ServerStep(float(loss.detach()), grads, stats)


def finetune_server(
    cfg: DictConfig,
    *,
    method: str = "?",
    train_ids: torch.Tensor | None = None,
    decoder: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    clients: int | None = None,
) -> Stage2Server:
    """The paper-1 Stage II server: decoder g on concat(ẑ^1, …, ẑ^M), cross-entropy.

    Parameters
    ----------
    cfg
        The composed config.
    method
        Method name for error messages (``"supervised"`` for ``none``).
    train_ids
        Labelled training IDs of the pass (default: all labelled IDs).
    decoder, optimizer
        A decoder (and its optimizer) shared with other shards; default: a fresh one.
    clients
        Uplinks per batch (default ``len(modalities)``: one device per modality and batch).
    """
    labels, num_classes = load_labels(cfg)
    ids = stage_ids(cfg)
    n = int(clients) if clients is not None else len(cfg.data.modalities)
    model = decoder if decoder is not None else _decoder(cfg, n, num_classes)
    server = Stage2Server(
        model,
        labels,
        train_ids=ids.labelled if train_ids is None else train_ids,
        test_ids=ids.test,
        val_ids=ids.val,
        num_clients=n,
        optimizer=optimizer or make_sgd(model.parameters(), cfg.strategy),
        lr_schedule=partial(scheduled_lr, cfg.strategy),
        method=method,
    )
    server.model.to(_device(cfg))
    return server
