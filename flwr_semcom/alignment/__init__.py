"""Semantics alignment of misaligned transceivers: SLF and its FedAvg baseline, device side.

Choi et al., "Semantics Alignment via Split Learning for Resilient Multi-User Semantic
Communication", arXiv 2310.09394, Sec. III. Generic: any transceiver with ordered,
freezable layers (:class:`FreezableTransceiver`), any channel module, any data. The server
side is :class:`strategies.slf.SLFStrategy` and
:class:`strategies.fedavg_alignment.FedAvgAlignment`; paper 2's VQ-VAE devices are built in
:mod:`flwr_semcom.slf.factory`.

==========================  ==============================================================
module                      holds
==========================  ==============================================================
``transceiver``             the transceiver protocol, receiver part, ``freeze_last``
``loops``                   training through a channel (FLOP-counted), step-4 transmission
``device``                  :class:`SLFDevice`: what one node brings (typed pieces)
``handlers``                :func:`add_slf_client`: the ClientApp side of the nine messages
``messages``                message types and typed record access
``recovery``                the recovery-time model (Sec. IV)
==========================  ==============================================================
"""

from flwr_semcom.alignment.device import (
    MODEL_KEY,
    NODE_KEY,
    ROLES,
    DeviceFn,
    FinetuneSchedule,
    NodeSetup,
    SLFDevice,
)
from flwr_semcom.alignment.handlers import add_slf_client, slf_handlers
from flwr_semcom.alignment.loops import TrainStats, decode_scores, fit_transceiver, transmit
from flwr_semcom.alignment.recovery import RecoveryModel
from flwr_semcom.alignment.transceiver import FreezableLayers, FreezableTransceiver

__all__ = [
    "MODEL_KEY",
    "NODE_KEY",
    "ROLES",
    "DeviceFn",
    "FinetuneSchedule",
    "FreezableLayers",
    "FreezableTransceiver",
    "NodeSetup",
    "RecoveryModel",
    "SLFDevice",
    "TrainStats",
    "add_slf_client",
    "decode_scores",
    "fit_transceiver",
    "slf_handlers",
    "transmit",
]
