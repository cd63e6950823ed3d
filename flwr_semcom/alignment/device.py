"""What one node brings to SLF and FedAvg alignment: an :class:`SLFDevice` (typed pieces).

Choi et al., arXiv 2310.09394, Sec. III. A node holds a transceiver (any
:class:`~flwr_semcom.alignment.FreezableTransceiver`), its data, its channel, its loss and
how it trains. :func:`flwr_semcom.alignment.add_slf_client` turns a ``device_fn(context) ->
SLFDevice`` into the SLF handlers of a ``ClientApp``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from flwr.app import Context
from torch import Tensor, nn

from flwr_semcom.alignment.loops import InitFn, LossFn
from flwr_semcom.alignment.transceiver import FreezableTransceiver

__all__ = [
    "MODEL_KEY",
    "NODE_KEY",
    "ROLES",
    "DeviceFn",
    "FinetuneSchedule",
    "NodeSetup",
    "SLFDevice",
]

#: Role of each partition id.
ROLES = ("transmitter", "receiver")
#: Parts an evaluation (step 4, FedAvg scoring) may send: the message config's ``"part"``.
EVAL_PARTS = ("test", "val")
MODEL_KEY = "slf.model"
NODE_KEY = "slf.node"

#: A value a ``ConfigRecord`` holds (setup and data parameters).
Scalar = int | float | str | bool


@dataclass(frozen=True)
class NodeSetup:
    """What ``setup_fn`` gives a node at ``train.slf_setup``.

    Attributes
    ----------
    state
        The initial (pre-trained) transceiver's ``state_dict``.
    data
        The node's data parameters (stored in ``slf.node``, passed to ``data_fn``).
    metrics
        Extra numbers for the setup reply (e.g. ``{"from-cache": 1}``).
    """

    state: Mapping[str, Tensor]
    data: Mapping[str, Scalar]
    metrics: Mapping[str, int | float] = field(default_factory=dict)


@dataclass(frozen=True)
class FinetuneSchedule:
    """SLF step 2: ``steps`` at ``lr`` for ``n >= 1``; re-initialise and ``reinit_steps`` at
    ``reinit_lr`` for ``n = 0`` (paper 2, Sec. III-B: the original rate)."""

    steps: int
    lr: float
    reinit_steps: int
    reinit_lr: float


@dataclass(frozen=True)
class SLFDevice:
    """One node's side of SLF and FedAvg alignment (typed; no config tree).

    Parameters
    ----------
    transceiver_fn
        A fresh transceiver of the node's architecture, on its device (weights come from the
        node state).
    setup_fn
        ``setup_fn(role, params) -> NodeSetup``: the initial transceiver and data of this
        node, from the setup message's parameters.
    data_fn
        ``data_fn(params, part) -> images`` for ``part`` ``"train"``, ``"test"`` or ``"val"``
        (the latter only when the experiment asks for validation scores); ``params`` are the
        node's (or, for FedAvg evaluation and step-4 scoring, the sender's) data
        parameters.
    score_fn
        ``score_fn(model, received, params) -> {"mse": …, "accuracy": …}``: decode what the
        receiver got and score it against the sender's part named by ``params`` (its
        ``"part"``: ``"test"``, or ``"val"`` for validation scores; absent = ``"test"``).
    channel_fn
        ``channel_fn(model, crossover) -> nn.Module``: the link for the message's channel
        parameter (``forward(y, generator=None)``).
    loss
        The training loss on the transceiver's output dict (``{"loss": …}``).
    batch_size
        Images per training step.
    finetune
        SLF step 2 schedule.
    fedavg_steps, fedavg_lr
        Local steps and rate of one FedAvg alignment round.
    seed
        Base seed of FedAvg local training (``seed + 1000 * round + partition``).
    init
        Called before training from scratch (SLF ``n = 0``), e.g. a data-dependent codebook.
    bits_per_use
        ``bits_per_use(model)``: bits one channel use carries (the ledger sizes step 4 with
        it); default 32 (a float32 per use).
    """

    transceiver_fn: Callable[[], FreezableTransceiver]
    setup_fn: Callable[[str, Mapping[str, Scalar]], NodeSetup]
    data_fn: Callable[[Mapping[str, Scalar], str], Tensor]
    score_fn: Callable[[FreezableTransceiver, Tensor, Mapping[str, Scalar]], Mapping[str, float]]
    channel_fn: Callable[[FreezableTransceiver, float], nn.Module]
    loss: LossFn
    batch_size: int
    finetune: FinetuneSchedule
    fedavg_steps: int
    fedavg_lr: float
    seed: int = 0
    init: InitFn | None = None
    bits_per_use: Callable[[FreezableTransceiver], int] = lambda _model: 32


#: ``device_fn(context) -> SLFDevice`` (cache per run: called on every message).
DeviceFn = Callable[[Context], SLFDevice]
