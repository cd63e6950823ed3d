"""Paper 2's devices from the composed config: the one place ``conf/`` becomes typed objects.

Choi et al., arXiv 2310.09394, Sec. IV. :func:`slf_device` turns a composed SLF config
(``conf/strategy/slf.yaml``, ``conf/model/vqvae.yaml``, ``conf/data/mnist_mix.yaml``) into an
:class:`~flwr_semcom.alignment.SLFDevice`: the VQ-VAE transceiver, the pre-trained T1..T3
(cached), the MNIST / eq. 8 mixture data, the DMC link and the eq. 7 loss.
:func:`device_from_context` is what the bundled ClientApp passes to
:func:`~flwr_semcom.alignment.add_slf_client`: it composes the config from
``context.run_config`` once per run and caches the device in the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import Context
from omegaconf import DictConfig
from torch import Tensor

from flwr_semcom.alignment import FinetuneSchedule, FreezableTransceiver, NodeSetup, SLFDevice
from flwr_semcom.alignment.device import Scalar
from flwr_semcom.alignment.loops import decode_scores
from flwr_semcom.config import config_from_run_config
from flwr_semcom.losses.vqvae import VQVAELoss
from flwr_semcom.slf.data import SOURCES, node_data
from flwr_semcom.slf.pretrained import pretrained_classifier, pretrained_transceiver
from flwr_semcom.slf.settings import check_slf_config, pretraining
from flwr_semcom.slf.training import bits_per_index, codebook_from_images, dmc_of

__all__ = ["device_from_context", "slf_device"]


def _source(params: Mapping[str, Scalar]) -> tuple[str, float]:
    """``(source, epsilon)`` of a node's data parameters (``ValueError`` when invalid)."""
    for key in ("source", "epsilon"):
        if key not in params:
            raise ValueError(f"message config is missing {key!r}")
    source, epsilon = params["source"], params["epsilon"]
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise ValueError(f"epsilon must be a number in [0, 1], got {epsilon!r}")
    if not 0.0 <= float(epsilon) <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    return str(source), float(epsilon)


def slf_device(cfg: DictConfig) -> SLFDevice:
    """A node's SLF device for a composed (and checked) SLF config."""
    s = cfg.strategy
    pre = pretraining(cfg)
    envs = {name: (str(e.source), float(e.epsilon)) for name, e in s.transceivers.items()}

    def transceiver_fn() -> FreezableTransceiver:
        return pre.new_transceiver().to(pre.device)

    def setup_fn(role: str, params: Mapping[str, Scalar]) -> NodeSetup:
        """Partition 0 installs the case's transmitter, partition 1 its receiver; j keeps its
        own pre-training data and gets its task classifier ready."""
        if role not in params:
            raise ValueError(f"message config is missing {role!r}")
        name = str(params[role])
        model, cached = pretrained_transceiver(pre, name)
        source, epsilon = _source(params)
        if role == "receiver":
            pretrained_classifier(pre, source)
            source, epsilon = envs[name]
        return NodeSetup(
            state=model.state_dict(),
            data={"transceiver": name, "source": source, "epsilon": epsilon},
            metrics={"from-cache": int(cached)},
        )

    def data_fn(params: Mapping[str, Scalar], part: str) -> Tensor:
        return node_data(pre.data, *_source(params), part).images

    def score_fn(
        model: FreezableTransceiver, received: Tensor, params: Mapping[str, Scalar]
    ) -> dict[str, float]:
        source, epsilon = _source(params)
        test = node_data(pre.data, source, epsilon, str(params.get("part", "test")))
        classifier, _ = pretrained_classifier(pre, source)
        dev = received.device
        return decode_scores(
            model, classifier.to(dev), received, test.images.to(dev), test.labels.to(dev)
        )

    return SLFDevice(
        transceiver_fn=transceiver_fn,
        setup_fn=setup_fn,
        data_fn=data_fn,
        score_fn=score_fn,
        channel_fn=dmc_of,
        loss=VQVAELoss(float(s.beta)),
        batch_size=int(s.batch_size),
        finetune=FinetuneSchedule(
            steps=int(s.finetune.steps),
            lr=float(s.finetune.lr),
            reinit_steps=int(s.finetune.reinit_steps),
            reinit_lr=float(s.finetune.lr_reinit),
        ),
        fedavg_steps=int(s.fedavg.local_steps),
        fedavg_lr=float(s.fedavg.lr),
        seed=int(cfg.seed),
        init=codebook_from_images,
        bits_per_use=bits_per_index,
    )


_DEVICES: dict[tuple[tuple[str, Any], ...], tuple[SLFDevice, int]] = {}


def device_from_context(context: Context) -> SLFDevice:
    """The bundled app's device: config composed from ``context.run_config`` (cached per run
    config in this process); sets ``torch.set_num_threads(num_threads)`` on every call, as
    every other handler of the app does."""
    key = tuple(sorted(context.run_config.items()))
    if key not in _DEVICES:
        cfg = config_from_run_config(context.run_config)
        check_slf_config(cfg)
        if len(_DEVICES) >= 8:
            _DEVICES.pop(next(iter(_DEVICES)))
        _DEVICES[key] = (slf_device(cfg), int(cfg.num_threads))
    device, threads = _DEVICES[key]
    torch.set_num_threads(threads)
    return device
