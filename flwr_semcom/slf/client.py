"""ClientApp handlers of SLF and of the FedAvg alignment baseline (paper 2, Sec. III-B).

Choi et al., arXiv 2310.09394. Partition 0 is the transmitter ``i``, partition 1 the
receiver ``j``. A node keeps its transceiver in ``context.state["slf.model"]`` (an
``ArrayRecord``) and what it is in ``context.state["slf.node"]`` (a ``ConfigRecord``): the
transceiver's name, its role, and the data it holds. Hyper-parameters come from the composed
config (the run config's ``experiment`` / ``overrides``); the message carries only what
varies between runs (``n``, ``p``, ``ε``). Message types and contents: see
:mod:`flwr_semcom.slf.protocol`.

Non-finite guard (issue #9, :mod:`flwr_semcom.guard`): received parameters are checked before
they are installed (:func:`_received`) and a model before it is stored in ``context.state``
or sent back (:func:`_save_model`, :func:`_outgoing`); NaN or inf is refused with
:class:`~flwr_semcom.guard.NonFiniteError`, which Flower turns into an error reply.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from omegaconf import DictConfig

from flwr_semcom.config import config_from_run_config, resolve_device
from flwr_semcom.data import ImageDataset
from flwr_semcom.guard import check_finite
from flwr_semcom.models.vqvae import VQVAETransceiver
from flwr_semcom.slf import protocol as P
from flwr_semcom.slf.data import node_data
from flwr_semcom.slf.pretrained import (
    build_transceiver,
    pretrained_classifier,
    pretrained_transceiver,
)
from flwr_semcom.slf.settings import check_slf_config
from flwr_semcom.slf.training import decode_scores, encode_through_channel, train_transceiver

__all__ = ["ACTIONS", "MODEL_KEY", "NODE_KEY", "ROLES"]

#: Role of each partition id.
ROLES = ("transmitter", "receiver")
MODEL_KEY = "slf.model"
NODE_KEY = "slf.node"


def _config(context: Context) -> DictConfig:
    cfg = config_from_run_config(context.run_config)
    check_slf_config(cfg)
    torch.set_num_threads(int(cfg.num_threads))
    return cfg


def _role(context: Context) -> str:
    if "partition-id" not in context.node_config:
        raise ValueError(
            "node_config has no partition-id; start the SuperNodes with --node-config "
            "'partition-id=0 num-partitions=2' (0 = transmitter, 1 = receiver)"
        )
    pid = int(context.node_config["partition-id"])
    if pid not in (0, 1):
        raise ValueError(f"SLF uses partition-id 0 (transmitter) and 1 (receiver), got {pid}")
    return ROLES[pid]


def _node(context: Context) -> ConfigRecord:
    if NODE_KEY not in context.state.config_records:
        raise RuntimeError(f"this node has no SLF transceiver yet; send {P.SETUP} first")
    return context.state.config_records[NODE_KEY]


def _node_data(cfg: DictConfig, node: ConfigRecord, part: str) -> ImageDataset:
    """The data this node holds (``source`` / ``epsilon`` of its ``slf.node`` record)."""
    return node_data(cfg, P.config_str(node, "source"), P.config_float(node, "epsilon"), part)


def _received(msg: Message) -> ArrayRecord:
    """The message's ``"arrays"``, checked for NaN / inf before anything installs them."""
    record = P.arrays_of(msg.content)
    check_finite(
        "received parameters",
        record,
        where=f"{msg.metadata.message_type} from node {msg.metadata.src_node_id}",
        consequence="not installed",
    )
    return record


def _outgoing(state: Any, action: str) -> ArrayRecord:
    """``state`` as a record for a reply, checked for NaN / inf first."""
    check_finite("parameters", state, where=action, consequence="not sent")
    return P.to_record(state)


def _model_from(cfg: DictConfig, record: ArrayRecord) -> VQVAETransceiver:
    model = build_transceiver(cfg)
    model.load_state_dict(P.from_record(record))
    return model.to(resolve_device(str(cfg.device)))


def _load_model(cfg: DictConfig, context: Context) -> VQVAETransceiver:
    _node(context)
    return _model_from(cfg, context.state.array_records[MODEL_KEY])


def _save_model(model: VQVAETransceiver, context: Context) -> None:
    check_finite("transceiver", model, where="slf node state", consequence="not stored")
    context.state[MODEL_KEY] = P.to_record(model.state_dict())


def _device(model: VQVAETransceiver) -> torch.device:
    return next(model.parameters()).device


def _reply(msg: Message, **records: Any) -> Message:
    return Message(RecordDict(records), reply_to=msg)


def setup(msg: Message, context: Context) -> Message:
    """Install this node's pre-trained transceiver (trained now if not cached)."""
    cfg = _config(context)
    role = _role(context)
    c = P.config_of(msg.content)
    name = P.config_str(c, role)
    model, cached = pretrained_transceiver(cfg, name)
    source, epsilon = P.config_str(c, "source"), P.config_float(c, "epsilon")
    if role == "receiver":  # j holds its own pre-training data; its task model is ready
        pretrained_classifier(cfg, source)
        env = cfg.strategy.transceivers[name]
        source, epsilon = str(env.source), float(env.epsilon)
    _save_model(model, context)
    context.state[NODE_KEY] = ConfigRecord(
        {"transceiver": name, "role": role, "source": source, "epsilon": epsilon}
    )
    metrics = MetricRecord(
        {
            "partition-id": ROLES.index(role),
            "params": sum(p.numel() for p in model.parameters()),
            "from-cache": int(cached),
        }
    )
    return _reply(msg, metrics=metrics)


def receiver(msg: Message, context: Context) -> Message:
    """SLF step 1 (at j): hand out the codebook and decoder."""
    model = _load_model(_config(context), context)
    return _reply(msg, arrays=_outgoing(model.receiver_state_dict(), P.RECEIVER))


def finetune(msg: Message, context: Context) -> Message:
    """SLF steps 2-3 (at i): fine-tune ENC_i + downloaded codebook/DEC_j, return the unfrozen.

    ``n = 0`` re-initialises the whole virtual transceiver and re-trains it from scratch
    (``finetune.reinit_steps`` at the original rate ``finetune.lr_reinit``); ``n >= 1``
    freezes the last ``n`` layers and runs ``finetune.steps`` at the reduced rate.
    """
    cfg = _config(context)
    node = _node(context)
    model = _load_model(cfg, context)
    device = _device(model)
    downloaded = P.from_record(_received(msg))
    model.load_receiver_state_dict({k: v.to(device) for k, v in downloaded.items()})
    c = P.config_of(msg.content)
    n = model.check_freeze(P.config_int(c, "freeze_layers"))
    seed = P.config_int(c, "seed")
    ft = cfg.strategy.finetune
    if n == 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.reset_parameters()
    model.freeze_last(n)
    stats = train_transceiver(
        model,
        _node_data(cfg, node, "train").images.to(device),
        steps=int(ft.reinit_steps if n == 0 else ft.steps),
        lr=float(ft.lr_reinit if n == 0 else ft.lr),
        batch_size=int(cfg.strategy.batch_size),
        crossover=P.config_float(c, "crossover"),
        beta=float(cfg.strategy.beta),
        seed=seed,
        init_codebook=n == 0,
    )
    upload = model.unfrozen_receiver_state_dict()
    unfrozen = sum(v.numel() for v in upload.values())
    model.freeze_last(0)
    _save_model(model, context)
    metrics = MetricRecord(
        {
            "freeze-layers": n,
            "unfrozen-params": unfrozen,
            "trainable-params": unfrozen + sum(p.numel() for p in model.encoder.parameters()),
            "steps": stats.steps,
            "batch-size": stats.batch_size,
            "flops": float(stats.flops),
            "flops-per-step": float(stats.flops_per_step),
            "wall-s": stats.wall_s,
            "loss": stats.last_loss,
        }
    )
    return _reply(msg, arrays=_outgoing(upload, P.FINETUNE), metrics=metrics)


def install(msg: Message, context: Context) -> Message:
    """Install parameters: SLF's upload at j (``scope=receiver``) or a whole FedAvg model."""
    cfg = _config(context)
    model = _load_model(cfg, context)
    scope = P.config_str(P.config_of(msg.content), "scope")
    state = P.from_record(_received(msg))
    if scope == "receiver":
        model.load_receiver_state_dict(state, partial=True)
    elif scope == "model":
        model.load_state_dict(state)
    else:
        raise ValueError(f"install scope must be 'receiver' or 'model', got {scope!r}")
    _save_model(model, context)
    installed = sum(v.numel() for v in state.values())
    return _reply(msg, metrics=MetricRecord({"installed-params": installed}))


def _transmit(
    model: VQVAETransceiver, test: ImageDataset, c: ConfigRecord
) -> tuple[torch.Tensor, MetricRecord]:
    """Encode ``test`` and pass the indices through the DMC of ``c`` (step 4, at i)."""
    _, received = encode_through_channel(
        model,
        test.images.to(_device(model)),
        P.config_float(c, "crossover"),
        P.config_int(c, "seed"),
    )
    metrics = MetricRecord(
        {
            "num-examples": len(test),
            "channel-uses": int(received.numel()),
            "bits-per-use": math.ceil(math.log2(model.codebook_size)),
        }
    )
    return received, metrics


def _score(
    cfg: DictConfig, model: VQVAETransceiver, indices_hat: torch.Tensor, c: ConfigRecord
) -> MetricRecord:
    """Decode ``indices_hat`` and score against the sender's test part named in ``c``."""
    source = P.config_str(c, "source")
    test = node_data(cfg, source, P.config_float(c, "epsilon"), "test")
    classifier, _ = pretrained_classifier(cfg, source)
    device = _device(model)
    scores = decode_scores(
        model,
        classifier.to(device),
        indices_hat.to(device),
        test.images.to(device),
        test.labels.to(device),
    )
    return MetricRecord({**scores, "num-examples": len(test)})


def encode(msg: Message, context: Context) -> Message:
    """SLF step 4 (at i): encode the local test images, send the indices through the DMC."""
    cfg = _config(context)
    node = _node(context)
    model = _load_model(cfg, context)
    received, metrics = _transmit(model, _node_data(cfg, node, "test"), P.config_of(msg.content))
    return _reply(msg, arrays=ArrayRecord({"indices_hat": received.cpu()}), metrics=metrics)


def score(msg: Message, context: Context) -> Message:
    """SLF step 4 (at j): decode the received indices, score MSE and classifier accuracy.

    The ground truth (the sender's test images and labels) is read from the same data
    folder by its spec; it is the evaluation harness, not a protocol transfer.
    """
    cfg = _config(context)
    model = _load_model(cfg, context)
    indices_hat = P.from_record(P.arrays_of(msg.content))["indices_hat"]
    return _reply(msg, metrics=_score(cfg, model, indices_hat, P.config_of(msg.content)))


def model_query(msg: Message, context: Context) -> Message:
    """Hand out the whole transceiver (FedAvg round 0)."""
    model = _load_model(_config(context), context)
    return _reply(msg, arrays=_outgoing(model.state_dict(), P.MODEL))


def fedavg_train(msg: Message, context: Context) -> Message:
    """One FedAvg round: train the global transceiver on the local data and link."""
    cfg = _config(context)
    node = _node(context)
    model = _model_from(cfg, _received(msg))
    c = P.config_of(msg.content)
    images = _node_data(cfg, node, "train").images
    fa = cfg.strategy.fedavg
    stats = train_transceiver(
        model,
        images.to(_device(model)),
        steps=int(fa.local_steps),
        lr=float(fa.lr),
        batch_size=int(cfg.strategy.batch_size),
        crossover=P.config_float(c, "crossover"),
        beta=float(cfg.strategy.beta),
        seed=int(cfg.seed)
        + 1000 * P.config_int(c, "server-round")
        + ROLES.index(P.config_str(node, "role")),
    )
    metrics = MetricRecord(
        {
            "num-examples": len(images),
            "flops": float(stats.flops),
            "wall-s": stats.wall_s,
            "loss": stats.last_loss,
        }
    )
    return _reply(msg, arrays=_outgoing(model.state_dict(), P.FEDAVG_TRAIN), metrics=metrics)


def fedavg_evaluate(msg: Message, context: Context) -> Message:
    """Score the global model on i's test images (i → DMC → the same model at j)."""
    cfg = _config(context)
    _node(context)
    model = _model_from(cfg, _received(msg))
    c = P.config_of(msg.content)
    test = node_data(cfg, P.config_str(c, "source"), P.config_float(c, "epsilon"), "test")
    received, _ = _transmit(model, test, c)
    return _reply(msg, metrics=_score(cfg, model, received, c))


ACTIONS = {
    P.SETUP: setup,
    P.RECEIVER: receiver,
    P.FINETUNE: finetune,
    P.INSTALL: install,
    P.ENCODE: encode,
    P.SCORE: score,
    P.MODEL: model_query,
    P.FEDAVG_TRAIN: fedavg_train,
    P.FEDAVG_EVAL: fedavg_evaluate,
}
