"""Stage I networks and losses of paper 1: SSL transmitters, intra-modal losses, pipelines.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. III-A: each device m has an encoder f^m and,
for pretraining, a projector whose outputs p^m enter the losses: the intra-modal term between
two views of one modality (eq. 8-10; Barlow Twins eq. 19, SimCLR's NT-Xent eq. 18 for the
baselines) and DeCUR's cross-modal term between modalities (eq. 11-15). Stage II keeps the
encoder and drops the projector.

Initial weights depend only on ``(seed, modality)`` (``derive_seed(seed, "p1-init",
modality)``): every device of a modality, the server placement's copies and every method start
from the same encoder, so methods differ only in what Stage I does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from flwr_semcom.losses.barlow_twins import BarlowTwinsLoss
from flwr_semcom.losses.decur import DeCURLoss
from flwr_semcom.losses.nt_xent import NTXentLoss
from flwr_semcom.models.transmitter import DeviceTransmitter, build_transmitter
from flwr_semcom.paper1.settings import SSLSettings, ssl_settings
from flwr_semcom.split.schedule import derive_seed

__all__ = [
    "SSLPipeline",
    "build_ssl_transmitter",
    "decur_loss",
    "encoder_state",
    "intra_loss",
    "make_pretrain_sgd",
    "typed_settings",
]

IntraLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Settings = SSLSettings | DictConfig


def typed_settings(settings: Settings) -> SSLSettings:
    """The typed settings (a composed config is translated once, by :func:`ssl_settings`)."""
    return settings if isinstance(settings, SSLSettings) else ssl_settings(settings)


def build_ssl_transmitter(settings: Settings, modality: str) -> DeviceTransmitter:
    """Encoder + JSCC head + projector of ``modality``, seeded by ``(seed, modality)``."""
    s = typed_settings(settings)
    torch.manual_seed(derive_seed(s.seed, "p1-init", modality))
    return build_transmitter(
        modality,
        s.encoder,
        s.image_size,
        s.num_symbols,
        projector_widths=list(s.projector),
        encoder_kwargs=s.encoder_kwargs,
    )


def decur_loss(settings: Settings) -> DeCURLoss:
    """DeCUR loss (eq. 7-15) with ``K_sha = common_fraction × D``."""
    s = typed_settings(settings)
    return DeCURLoss(s.common_dim, s.lambda_offdiag, reduction=s.reduction)


def intra_loss(settings: Settings, method: str) -> IntraLoss:
    """The intra-modal loss of ``method`` between two views' projector outputs.

    ``decur``: eq. 10 (Barlow Twins form, weighted as in DeCUR's reduction); ``barlow_twins``:
    eq. 19; ``simclr``: NT-Xent, eq. 18.
    """
    s = typed_settings(settings)
    if method == "decur":
        loss = decur_loss(s)
        w = loss.weights["intra_1"]
        return lambda a, b: w * loss.intra_term(a, b)
    if method == "barlow_twins":
        return BarlowTwinsLoss(s.lambda_offdiag)
    if method == "simclr":
        return NTXentLoss(s.temperature)
    raise ValueError(
        f"method {method!r} has no intra-modal loss; valid: decur, barlow_twins, simclr"
    )


def make_pretrain_sgd(params: Any, settings: Settings) -> torch.optim.Optimizer:
    """SGD with the Stage I ``lr``, ``momentum`` and ``weight_decay``."""
    s = typed_settings(settings)
    return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)


def encoder_state(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The encoder's own state from a transmitter state: ``<prefix>encoder.<name>`` → ``<name>``."""
    head = f"{prefix}encoder."
    out = {k[len(head) :]: v for k, v in state.items() if k.startswith(head)}
    if not out:
        raise ValueError(f"no '{head}*' entries in the state (keys: {sorted(state)[:4]}…)")
    return out


class SSLPipeline(nn.Module):
    """Stage I ``split`` client model: two views in, ``{"p", "intra"}`` out.

    ``p`` is the projector output of view ``a`` ``[B, P]`` (what the cross-modal term needs,
    sent up); ``intra`` ``[B, 1]`` holds the device's intra-modal loss split evenly over the
    batch (``L_intra / B`` per row). The server adds ``Σ_b intra_b = L_intra`` to its loss, so
    the gradient it returns for ``intra`` is the loss weight (1) and the device's update is the
    gradient of ``L_cross + L_intra`` (eq. 7). This carries the device-local term through the
    split runtime, which only back-propagates received gradients, at a cost of B floats each
    way (1/P of the feature traffic).
    """

    def __init__(self, transmitter: DeviceTransmitter, intra: IntraLoss) -> None:
        super().__init__()
        self.transmitter = transmitter
        self._intra = intra

    def forward(
        self, x_a: torch.Tensor, x_b: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        p_a = self.transmitter(x_a)["p"]
        p_b = self.transmitter(x_b)["p"]
        b = p_a.shape[0]
        share = (self._intra(p_a, p_b) / b).reshape(1, 1).expand(b, 1)
        return {"p": p_a, "intra": share}
