"""Paper 1's split-learning tasks, registered in the split runtime's registries.

Paper 1 (Zhao et al., arXiv 2503.13940). Both stages move tensors through
:mod:`flwr_semcom.split` (docs/split.md); these tasks say what the tensors are:

- ``p1_ssl`` (client) / ``p1_decur`` (server): Stage I, placement ``split``. The device sends
  the projector output p^m of view ``a`` and its intra-modal loss share (see
  :class:`~flwr_semcom.paper1.models.SSLPipeline`); the server computes DeCUR's cross-modal term
  on C(p^1_a, p^2_a) (eq. 11-15) plus the devices' intra terms (eq. 10) and returns
  ∂L/∂p^m. The server has no weights in Stage I.
- ``p1_finetune`` (client) / ``p1_decoder`` (server): Stage II (eq. 2-4, 16-17). Like the
  runtime's ``rgbd_supervised`` / ``rgbd_decoder`` but with ``model.widths`` for the small
  encoder, explicit (shard) training IDs, a decoder that shards can share, and the stability
  checks of :mod:`flwr_semcom.paper1.stability` (non-finite loss, uplink or gradient stops
  the method, naming method, stage and round; gradient norms are kept per round).

Stage II initial encoder weights (random, or Stage I's) are put in the client's
``context.state`` by :mod:`flwr_semcom.paper1.client` before the first exchange.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from flwr_semcom.config import ConfigError
from flwr_semcom.models.decoder import ServerDecoder
from flwr_semcom.models.transmitter import build_transmitter
from flwr_semcom.paper1.augment import AugmentConfig, augment_view, two_views
from flwr_semcom.paper1.data import device_modality, num_devices, stage_ids
from flwr_semcom.paper1.models import (
    SSLPipeline,
    build_ssl_transmitter,
    decur_loss,
    intra_loss,
    make_pretrain_sgd,
)
from flwr_semcom.paper1.settings import encoder_kwargs
from flwr_semcom.paper1.stability import NonFiniteError
from flwr_semcom.split.rgbd import (
    SplitPipeline,
    channel_kwargs,
    decoder_cross_entropy,
    load_labels,
    load_modality,
    make_sgd,
    scheduled_lr,
    set_lr,
)
from flwr_semcom.split.schedule import BatchPlan, derive_seed
from flwr_semcom.split.tasks import CLIENT_TASKS, SERVER_TASKS, ClientTask, ServerStep, ServerTask

__all__ = [
    "PRETRAIN_CLIENT_TASK",
    "PRETRAIN_SERVER_TASK",
    "FINETUNE_CLIENT_TASK",
    "FINETUNE_SERVER_TASK",
    "DecoderServer",
    "DeCURServer",
    "FinetuneClient",
    "SSLClient",
]

PRETRAIN_CLIENT_TASK = "p1_ssl"
PRETRAIN_SERVER_TASK = "p1_decur"
FINETUNE_CLIENT_TASK = "p1_finetune"
FINETUNE_SERVER_TASK = "p1_decoder"
_VIEW_CACHE = 16  # augmented batches kept per client process (>= 2 × steps per message)


def _partition(node_config: Mapping[str, Any]) -> int:
    if "partition-id" not in node_config:
        raise ConfigError("node_config: missing 'partition-id' (an integer >= 0)")
    return int(node_config["partition-id"])


def _check_ids(ids: torch.Tensor, n: int, role: str) -> None:
    if ids.numel() and (int(ids.max()) >= n or int(ids.min()) < 0):
        raise ValueError(f"plan: sample IDs out of range [0, {n}) for {role}")


@CLIENT_TASKS.register(PRETRAIN_CLIENT_TASK)
class SSLClient(ClientTask):
    """Stage I ``split`` device: two augmented views → ``{"p", "intra"}`` (eq. 7-10)."""

    def __init__(self, cfg: DictConfig, node_config: Mapping[str, Any]) -> None:
        self.partition_id = _partition(node_config)
        self.role = device_modality(cfg, self.partition_id)
        self.cfg = cfg
        method = str(cfg.pretrain.method)
        transmitter = build_ssl_transmitter(cfg, self.role)
        self.model = SSLPipeline(transmitter, intra_loss(cfg, method))
        self.data = load_modality(cfg, self.role)
        self.aug = AugmentConfig.from_mapping(cfg.pretrain.get("augment"))
        self._views: dict[tuple[int, int, int], tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def inputs(self, batch: BatchPlan, train: bool) -> tuple[torch.Tensor, ...]:
        """Views ``a`` and ``b`` of the batch, from its augmentation seed.

        The split runtime asks twice per batch (forward, then the replay when the gradients
        arrive); the views of the last few batches are kept in this process so the replay
        reuses them. A cache miss recomputes bit-identical views (the draws depend only on
        the seed), so the cache changes speed, never results.
        """
        _check_ids(batch.ids, self.data.shape[0], self.role)
        key = (batch.aug_seed, batch.ids.numel(), hash(batch.ids.numpy().tobytes()))
        hit = self._views.get(key)
        if hit is not None and torch.equal(hit[0], batch.ids):
            return hit[1]
        views = two_views(self.data[batch.ids], self.role, batch.aug_seed, self.aug)
        self._views[key] = (batch.ids.clone(), views)
        while len(self._views) > _VIEW_CACHE:
            self._views.pop(next(iter(self._views)))
        return views

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return make_pretrain_sgd(params, self.cfg)


class _Progress:
    """Method, stage and round for messages, and per-round gradient norms."""

    method: str = "?"
    stage: str = "?"
    round: int = 0

    def _init_progress(self, method: str, stage: str) -> None:
        self.method = method
        self.stage = stage
        self.round = 0
        self.grad_norms: list[float] = []
        self.uplink_grad_norms: list[float] = []

    def start_round(self, round_: int) -> None:
        """Set the round named in error messages and clear the per-round norms."""
        self.round = int(round_)
        self.grad_norms = []
        self.uplink_grad_norms = []

    def norm_stats(self) -> dict[str, float]:
        """Mean and max of the round's gradient norms (NaN when none)."""
        out: dict[str, float] = {}
        for name, values in (
            ("grad_norm", self.grad_norms),
            ("uplink_grad_norm", self.uplink_grad_norms),
        ):
            out[f"{name}_mean"] = sum(values) / len(values) if values else math.nan
            out[f"{name}_max"] = max(values) if values else math.nan
        return out

    def _fail(self, what: str) -> NonFiniteError:
        return NonFiniteError(self.method, self.stage, self.round, what)

    def _uplink_leaves(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]]
    ) -> list[dict[str, torch.Tensor]]:
        """The uplinks, checked finite, as fresh leaves that will hold ∂L/∂uplink."""
        for c, up in enumerate(uplinks):
            for name, t in up.items():
                if not bool(torch.isfinite(t).all()):
                    raise self._fail(f"uplink {name!r} from client {c}")
        return [
            {k: v.detach().clone().requires_grad_(True) for k, v in up.items()} for up in uplinks
        ]

    def _check_loss(self, loss: torch.Tensor) -> None:
        if not math.isfinite(float(loss.detach())):
            raise self._fail(f"loss ({float(loss.detach())})")

    def _uplink_grads(
        self, leaves: Sequence[Mapping[str, torch.Tensor]]
    ) -> list[dict[str, torch.Tensor]]:
        """∂L/∂uplink of each leaf (zeros where unused), checked finite; records their norm."""
        grads = [
            {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in leaf.items()}
            for leaf in leaves
        ]
        total = 0.0
        for c, g in enumerate(grads):
            for name, t in g.items():
                if not bool(torch.isfinite(t).all()):
                    raise self._fail(f"gradient of uplink {name!r} for client {c}")
                total += float(t.detach().double().pow(2).sum())
        self.uplink_grad_norms.append(math.sqrt(total))
        return grads


@SERVER_TASKS.register(PRETRAIN_SERVER_TASK)
class DeCURServer(_Progress, ServerTask):
    """Stage I ``split`` server: DeCUR's cross-modal term on the devices' ``p`` (eq. 11-15).

    Parameters
    ----------
    cfg
        The composed config (``pretrain`` group).
    train_ids
        The (unlabelled) training IDs of the pass; default: every training scene.
    clients
        Number of clients whose uplinks form one batch, in modality order (default: all,
        ``len(modalities) × devices_per_modality``; a shard's strategy passes M).
    """

    client_task = PRETRAIN_CLIENT_TASK

    def __init__(
        self,
        cfg: DictConfig,
        train_ids: torch.Tensor | None = None,
        clients: int | None = None,
    ) -> None:
        self._init_progress(str(cfg.pretrain.method), "pretrain")
        if str(cfg.pretrain.method) != "decur":
            raise ConfigError(
                f"pretrain.method: {cfg.pretrain.method!r} has no cross-modal term; the split "
                "placement is for decur"
            )
        self.loss_fn = decur_loss(cfg)
        self.cross_weight = self.loss_fn.weights["cross_common"]
        self.num_clients = int(clients) if clients is not None else num_devices(cfg)
        ids = stage_ids(cfg)
        self.train_ids = ids.train if train_ids is None else train_ids
        self.test_ids = torch.zeros(0, dtype=torch.int64)
        self.model = nn.Module()  # the server has no weights in Stage I

    def loss(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]], batch: BatchPlan
    ) -> tuple[torch.Tensor, dict[str, float]]:
        cross = torch.zeros(())
        for m, n in itertools.combinations(range(len(uplinks)), 2):
            terms = self.loss_fn.cross_terms(uplinks[m]["p"], uplinks[n]["p"])
            cross = cross + terms["cross_common"] + terms["cross_unique"]
        intra = sum((u["intra"].sum() for u in uplinks), torch.zeros(()))
        loss = self.cross_weight * cross + intra
        b = float(batch.size)
        return loss, {
            "n": b,
            "loss_sum": float(loss.detach()) * b,
            "cross_sum": float(cross.detach()) * b,
            "intra_sum": float(intra.detach()) * b,
        }

    def train_step(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]], batch: BatchPlan
    ) -> ServerStep:
        """The loss and ∂L/∂uplink (no server weights to update); stops on non-finite values."""
        leaves = self._uplink_leaves(uplinks)
        loss, stats = self.loss(leaves, batch)
        self._check_loss(loss)
        loss.backward()
        grads = self._uplink_grads(leaves)
        return ServerStep(float(loss.detach()), grads, stats)


@CLIENT_TASKS.register(FINETUNE_CLIENT_TASK)
class FinetuneClient(ClientTask):
    """Stage II device: transmitter (encoder + JSCC head) then the channel (eq. 1-2).

    The random initial encoder is ``build_ssl_transmitter``'s (seeded by modality, so the
    supervised baseline starts from the encoder every method starts Stage I from); the JSCC
    head is seeded by ``(seed, "p1-head", modality)``.
    """

    def __init__(self, cfg: DictConfig, node_config: Mapping[str, Any]) -> None:
        from flwr_semcom.channels import build_channel

        self.partition_id = _partition(node_config)
        self.role = device_modality(cfg, self.partition_id)
        self.cfg = cfg
        transmitter = build_transmitter(
            self.role,
            str(cfg.model.encoder),
            int(cfg.data.image_size),
            int(cfg.model.num_symbols),
            encoder_kwargs=encoder_kwargs(cfg),
        )
        torch.manual_seed(derive_seed(int(cfg.seed), "p1-head", self.role))
        transmitter.head.linear.reset_parameters()
        init = build_ssl_transmitter(cfg, self.role)
        transmitter.encoder.load_state_dict(init.encoder.state_dict())
        channel = build_channel(str(cfg.channel.name), **channel_kwargs(cfg))
        self.model = SplitPipeline(transmitter, channel)
        self.data = load_modality(cfg, self.role)
        self.augment = bool(cfg.strategy.get("augment", True))
        crop = float(cfg.get("finetune", {}).get("crop_scale_min", 0.6))
        self.geometry = AugmentConfig(
            crop_scale_min=crop, jitter_p=0.0, grayscale_p=0.0, depth_noise_p=0.0
        )

    def inputs(self, batch: BatchPlan, train: bool) -> tuple[torch.Tensor, ...]:
        """The batch's images; in training a random resized crop and flip (paper 1 Sec.
        IV-A: random crops), the same for both modalities (drawn from the batch's seed)."""
        _check_ids(batch.ids, self.data.shape[0], self.role)
        x = self.data[batch.ids]
        if train and self.augment:
            x = augment_view(x, self.role, batch.aug_seed, "a", self.geometry)
        return (x,)

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return make_sgd(params, self.cfg.strategy)

    def round_lr(self, round_: int) -> float | None:
        return scheduled_lr(self.cfg.strategy, round_)


@SERVER_TASKS.register(FINETUNE_SERVER_TASK)
class DecoderServer(_Progress, ServerTask):
    """Stage II server: decoder g on concat(ẑ^1, …, ẑ^M) with cross-entropy (eq. 3-4, 16).

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

    client_task = FINETUNE_CLIENT_TASK

    def __init__(
        self,
        cfg: DictConfig,
        method: str = "?",
        train_ids: torch.Tensor | None = None,
        decoder: ServerDecoder | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        clients: int | None = None,
    ) -> None:
        self._init_progress(method, "finetune")
        labels, num_classes = load_labels(cfg)
        self.labels = labels
        ids = stage_ids(cfg)
        self.train_ids = ids.labelled if train_ids is None else train_ids
        self.test_ids = ids.test
        self.num_clients = int(clients) if clients is not None else len(cfg.data.modalities)
        if decoder is None:
            hidden = cfg.model.get("decoder_hidden")
            in_dim = 2 * int(cfg.model.num_symbols) * self.num_clients
            torch.manual_seed(derive_seed(int(cfg.seed), "server-init"))
            decoder = ServerDecoder(in_dim, num_classes, None if hidden is None else int(hidden))
        self.model = decoder
        self.optimizer = optimizer or make_sgd(decoder.parameters(), cfg.strategy)
        self.strategy_cfg = cfg.strategy

    def start_round(self, round_: int) -> None:
        """Per-round norms (see ``_Progress``) and the round's learning rate."""
        super().start_round(round_)
        set_lr(self.optimizer, scheduled_lr(self.strategy_cfg, round_))

    def loss(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]], batch: BatchPlan
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return decoder_cross_entropy(self.model, self.labels, uplinks, batch)

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
