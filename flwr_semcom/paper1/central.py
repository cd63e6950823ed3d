"""Stage I placement ``server``: the server pretrains every modality's encoder itself.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. III-A, eq. 7-15 (DeCUR) / eq. 18-19 (baselines):
the server holds the unlabelled paired training scenes, builds each modality's transmitter
with the devices' initial weights (:func:`~flwr_semcom.paper1.models.build_ssl_transmitter`)
and runs :func:`~flwr_semcom.paper1.pretrain.ssl_pass` over every training scene (DeCUR: the
full loss; baselines: their loss per modality). :class:`ServerSSL` is the
:class:`strategies.pretrain.CentralTrainer` that :class:`strategies.pretrain.ServerPretrain`
drives; after the last pass each device downloads its modality's encoder
(:meth:`ServerSSL.payload`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord

from flwr_semcom.models.transmitter import DeviceTransmitter
from flwr_semcom.paper1.models import build_ssl_transmitter, encoder_state, make_pretrain_sgd
from flwr_semcom.paper1.pretrain import ssl_pass
from flwr_semcom.paper1.settings import SSLSettings

__all__ = ["ServerSSL"]


class ServerSSL:
    """Stage I at the server over every modality.

    Parameters
    ----------
    settings
        Stage I settings.
    data
        ``{modality: [N, C, H, W]}`` images the server holds (indexed by sample ID).
    train_ids
        The (unlabelled) training IDs of every pass.
    method
        ``decur``, ``barlow_twins`` or ``simclr``.
    device
        Where the models and data live.
    """

    def __init__(
        self,
        settings: SSLSettings,
        data: Mapping[str, torch.Tensor],
        train_ids: torch.Tensor,
        *,
        method: str,
        device: torch.device | str = "cpu",
    ) -> None:
        self.settings = settings
        self.method = method
        self.device = torch.device(device)
        self.modalities = list(data)
        self.models: dict[str, DeviceTransmitter] = {
            m: build_ssl_transmitter(settings, m).to(self.device) for m in self.modalities
        }
        self.data = {m: data[m].to(self.device) for m in self.modalities}
        params = [p for m in self.modalities for p in self.models[m].parameters()]
        self.optimizer = make_pretrain_sgd(params, settings)
        self.train_ids = train_ids

    def train_round(self, server_round: int) -> dict[str, float]:
        """One pass over every training scene; loss, gradient norms and samples."""
        stats = ssl_pass(
            self.models,
            self.data,
            self.train_ids,
            self.settings,
            method=self.method,
            round_=server_round,
            optimizer=self.optimizer,
            stage_name="pretrain-server",
            who="server",
        )
        return {
            "loss": stats.loss,
            "grad_norm_mean": stats.grad_norm_mean,
            "grad_norm_max": stats.grad_norm_max,
            "train_samples": float(stats.samples),
        }

    def payload(self, role: str) -> ArrayRecord:
        """The encoder of modality ``role`` (what its devices start Stage II from)."""
        return ArrayRecord(encoder_state(self.models[role].state_dict()))
