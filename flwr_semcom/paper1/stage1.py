"""Paper 1's Stage I ``split`` placement as split-learning tasks (typed), and their factories.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. III-A, eq. 7-15. Client task ``p1_ssl``
(:class:`SSLClient`): the device sends the projector output p^m of view ``a`` and its
intra-modal loss share (:class:`~flwr_semcom.paper1.models.SSLPipeline`); server task
:class:`DeCURServer`: DeCUR's cross-modal term on C(p^1_a, p^2_a) (eq. 11-15) plus the
devices' intra terms (eq. 10), returning ∂L/∂p^m. The server has no weights in Stage I.
Stage II lives in :mod:`flwr_semcom.paper1.stage2`; :func:`ssl_device` and
:func:`decur_server` translate the composed config into these objects.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from flwr_semcom.losses.decur import DeCURLoss
from flwr_semcom.paper1.augment import AugmentConfig, two_views
from flwr_semcom.paper1.data import device_modality, num_devices, stage_ids
from flwr_semcom.paper1.models import (
    SSLPipeline,
    build_ssl_transmitter,
    decur_loss,
    intra_loss,
    make_pretrain_sgd,
)
from flwr_semcom.paper1.progress import Progress
from flwr_semcom.paper1.rgbd import load_modality
from flwr_semcom.paper1.settings import ssl_settings
from flwr_semcom.rules import ConfigError, resolve_device
from flwr_semcom.split import ClientTask, ServerStep, ServerTask
from flwr_semcom.split.device import check_ids
from flwr_semcom.split.schedule import BatchPlan

__all__ = [
    "PRETRAIN_CLIENT_TASK",
    "DeCURServer",
    "SSLClient",
    "decur_server",
    "ssl_device",
]

PRETRAIN_CLIENT_TASK = "p1_ssl"
_VIEW_CACHE = 16  # augmented batches kept per client process (>= 2 × steps per message)


class SSLClient(ClientTask):
    """Stage I ``split`` device: two augmented views → ``{"p", "intra"}`` (eq. 7-10).

    Parameters
    ----------
    model
        The SSL pipeline (transmitter with projector + the method's intra-modal loss).
    data
        The device's modality tensor ``[N, C, H, W]``.
    augment
        Stage I augmentation settings (both views from the batch's seed).
    optimizer
        ``optimizer(params)`` → Stage I SGD.
    role
        The modality (``"rgb"`` / ``"depth"``).
    """

    def __init__(
        self,
        model: SSLPipeline,
        data: torch.Tensor,
        *,
        augment: AugmentConfig,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        role: str,
    ) -> None:
        self.model = model
        self.data = data
        self.aug = augment
        self.role = role
        self._optimizer = optimizer
        self._views: dict[tuple[int, int, int], tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def inputs(self, batch: BatchPlan, train: bool) -> tuple[torch.Tensor, ...]:
        """Views ``a`` and ``b`` of the batch, from its augmentation seed.

        The split runtime asks twice per batch (forward, then the replay when the gradients
        arrive); the views of the last few batches are kept in this process so the replay
        reuses them. A cache miss recomputes bit-identical views (the draws depend only on
        the seed), so the cache changes speed, never results.
        """
        check_ids(batch.ids, self.data.shape[0], self.role)
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
        return self._optimizer(params)


class DeCURServer(Progress, ServerTask):
    """Stage I ``split`` server: DeCUR's cross-modal term on the devices' ``p`` (eq. 11-15).

    Parameters
    ----------
    loss_fn
        The DeCUR loss (its ``cross_common`` weight scales the cross-modal terms).
    train_ids
        The (unlabelled) training IDs of the pass.
    num_clients
        Number of clients whose uplinks form one batch, in modality order.
    method
        Named in error messages.
    """

    def __init__(
        self,
        loss_fn: DeCURLoss,
        *,
        train_ids: torch.Tensor,
        num_clients: int,
        method: str = "decur",
    ) -> None:
        self.init_progress(method, "pretrain")
        self.loss_fn = loss_fn
        self.cross_weight = loss_fn.weights["cross_common"]
        self.num_clients = int(num_clients)
        self.train_ids = train_ids
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


def ssl_device(cfg: DictConfig, partition_id: int) -> SSLClient:
    """The Stage I ``split`` device of ``partition_id`` for ``cfg.pretrain.method``."""
    role = device_modality(cfg, partition_id)
    settings = ssl_settings(cfg)
    model = SSLPipeline(
        build_ssl_transmitter(settings, role), intra_loss(settings, str(cfg.pretrain.method))
    )
    model.to(torch.device(resolve_device(str(cfg.get("device", "cpu")))))
    return SSLClient(
        model,
        load_modality(cfg, role),
        augment=settings.augment,
        optimizer=lambda params: make_pretrain_sgd(params, settings),
        role=role,
    )


def decur_server(
    cfg: DictConfig, *, train_ids: torch.Tensor | None = None, clients: int | None = None
) -> DeCURServer:
    """The Stage I ``split`` server (DeCUR only: the other methods have no cross-modal term).

    ``train_ids`` default: every training scene; ``clients`` default: every device
    (``len(modalities) × devices_per_modality``; a shard's strategy passes M).
    """
    if str(cfg.pretrain.method) != "decur":
        raise ConfigError(
            f"pretrain.method: {cfg.pretrain.method!r} has no cross-modal term; the split "
            "placement is for decur"
        )
    return DeCURServer(
        decur_loss(ssl_settings(cfg)),
        train_ids=stage_ids(cfg).train if train_ids is None else train_ids,
        num_clients=int(clients) if clients is not None else num_devices(cfg),
        method=str(cfg.pretrain.method),
    )
