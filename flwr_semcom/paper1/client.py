"""Client actions of paper 1 (registered in the ClientApp through :data:`ACTIONS`).

Paper 1 (Zhao et al., arXiv 2503.13940), Algorithm 1. Split exchanges (Stage I ``split``,
Stage II) go through the split runtime's own actions; these add what lies around them:

Every action composes the run's config from ``context.run_config`` (cached per process,
:func:`flwr_semcom.config.config_from_run_config`); the messages carry only typed values.

``train.p1_pretrain_local`` (Stage I, placement ``local``)
    ``"config"``: ``method`` (``decur``, ``barlow_twins`` or ``simclr``), ``round``,
    ``upload`` (bool). Optional ``"weights"`` ArrayRecord: the
    modality's FedAvg average to start from. One pass of the intra-modal loss over the
    device's shard (:func:`~flwr_semcom.paper1.pretrain.ssl_pass`). Reply: ``"metrics"``
    (``loss``, ``grad_norm_mean``, ``grad_norm_max``, ``num-examples``) and, with ``upload``,
    ``"weights"``. A non-finite loss or gradient is answered with ``"error"`` ConfigRecord
    (``message``) instead of being applied.
``train.p1_set_weights``
    ``"config"``: ``target`` = ``local``; ``"weights"``: a full model state (the FedAvg
    average of Stage I ``local``). Split task models are set with the split runtime's
    ``train.split_set_model``.
``train.p1_init_finetune``
    ``"config"``: ``source`` ∈ {``random``,
    ``local``, ``split``, ``server``}; ``"encoder"`` ArrayRecord for ``server`` (the weights
    downloaded from the server). Writes the Stage II client model (encoder from ``source``,
    JSCC head freshly initialised) into the split runtime's state and clears its optimizer
    and exchange state, so the next ``train.split_step`` starts Stage II from it.
``train.p1_precise_bn``
    ``"config"``: ``samples``. Recomputes the
    batch-norm statistics of the Stage II client model at its current weights from
    ``samples`` of the device's own training scenes (train-mode forward, no gradients, no
    augmentation; "precise BN", Wu & Johnson 2021) before an evaluation. Only statistics
    change, which training never reads (train mode uses batch statistics); nothing but the
    control record crosses the link.
``query.p1_reset``
    Deletes every paper-1 and split-task entry of ``context.state`` (a new method starts
    from scratch). Reply: ``"info"`` with the number of entries removed.

Non-finite guard (issue #9, :mod:`flwr_semcom.guard`): received weights are checked before
they are installed (``train.p1_set_weights``, ``train.p1_init_finetune``, the ``"weights"`` of
``train.p1_pretrain_local``) and a model is checked before it is stored or sent back; NaN or
inf is refused with :class:`~flwr_semcom.guard.NonFiniteError` (an error reply), and
``train.p1_pretrain_local`` answers a diverged pass with its ``"error"`` record.

State: ``p1.local.model`` / ``p1.local.optim`` / ``p1.local.optim_meta`` (placement ``local``),
in ``context.state`` only; the split tasks' models are read and written through the split
runtime's public helpers (:func:`flwr_semcom.split.task_model`,
:func:`~flwr_semcom.split.set_task_model`, :func:`~flwr_semcom.split.clear_tasks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from omegaconf import DictConfig
from torch import nn

from flwr_semcom.config import config_from_run_config
from flwr_semcom.guard import check_finite
from flwr_semcom.paper1.data import shard_of, stage_ids
from flwr_semcom.paper1.models import build_ssl_transmitter, encoder_state, make_pretrain_sgd
from flwr_semcom.paper1.pretrain import ssl_pass
from flwr_semcom.paper1.rgbd import load_modality
from flwr_semcom.paper1.settings import SSLSettings, ssl_settings
from flwr_semcom.paper1.stability import NonFiniteError
from flwr_semcom.paper1.stage1 import PRETRAIN_CLIENT_TASK
from flwr_semcom.paper1.stage2 import FINETUNE_CLIENT_TASK, finetune_device
from flwr_semcom.rules import resolve_device
from flwr_semcom.split import clear_tasks, set_task_model, task_model
from flwr_semcom.split.schedule import derive_seed
from flwr_semcom.split.state import load_optimizer, optimizer_records

__all__ = [
    "ACTIONS",
    "INIT_FINETUNE",
    "PRECISE_BN",
    "LOCAL_KEYS",
    "PRETRAIN_LOCAL",
    "RESET",
    "SET_WEIGHTS",
    "SSL_METHODS",
    "init_finetune",
    "precise_bn",
    "pretrain_local",
    "reset",
    "set_weights",
]

PRETRAIN_LOCAL = "train.p1_pretrain_local"
SET_WEIGHTS = "train.p1_set_weights"
INIT_FINETUNE = "train.p1_init_finetune"
RESET = "query.p1_reset"
PRECISE_BN = "train.p1_precise_bn"

LOCAL_KEYS = ("p1.local.model", "p1.local.optim", "p1.local.optim_meta")
SOURCES = ("random", "local", "split", "server")
#: Stage I methods a device can run (``none`` has no Stage I).
SSL_METHODS = ("decur", "barlow_twins", "simclr")


def _config(msg: Message, action: str) -> ConfigRecord:
    if "config" not in msg.content:
        raise ValueError(f"{action}: the message has no 'config' record")
    rec: ConfigRecord = msg.content.config_records["config"]
    return rec


def _compose(context: Context) -> DictConfig:
    """The run's config (composed once per process and run config) and the thread count."""
    cfg = config_from_run_config(context.run_config)
    torch.set_num_threads(int(cfg.num_threads))
    return cfg


def _method(rec: ConfigRecord, action: str) -> str:
    method = rec.get("method")
    if method not in SSL_METHODS:
        raise ValueError(
            f"{action}: config 'method' must be one of {', '.join(SSL_METHODS)}, got {method!r}"
        )
    return str(method)


@lru_cache(maxsize=4)
def _ssl_settings_of(run_items: tuple[tuple[str, Any], ...]) -> SSLSettings:
    return ssl_settings(config_from_run_config(dict(run_items)))


def _ssl_settings(context: Context) -> SSLSettings:
    """The typed Stage I settings of the run, translated once per process and run config."""
    return _ssl_settings_of(tuple(sorted(context.run_config.items())))


def _partition(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise ValueError("node_config: missing 'partition-id' (an integer >= 0)")
    return int(context.node_config["partition-id"])  # type: ignore[arg-type]


def _load(model: nn.Module, record: ArrayRecord) -> None:
    """Install a stored or received model state (strict: the keys must match)."""
    try:
        model.load_state_dict(record.to_torch_state_dict(), strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"stored client state does not fit the model: {first}") from None


def pretrain_local(msg: Message, context: Context) -> Message:
    """``train.p1_pretrain_local``: one local Stage I pass with the intra-modal loss."""
    rec = _config(msg, PRETRAIN_LOCAL)
    cfg = _compose(context)
    method = _method(rec, PRETRAIN_LOCAL)
    settings = _ssl_settings(context)
    round_ = int(rec.get("round", 0))  # type: ignore[arg-type]
    pid = _partition(context)
    modality, shard = shard_of(cfg, pid)
    device = torch.device(resolve_device(str(cfg.device)))
    model = build_ssl_transmitter(settings, modality).to(device)
    state = context.state
    who = f"client {modality}-{shard}"
    if "weights" in msg.content:
        check_finite(
            "received weights",
            msg.content.array_records["weights"],
            where=f"{PRETRAIN_LOCAL} at {who}",
            round_=round_,
            method=method,
            consequence="not installed",
        )
        _load(model, msg.content.array_records["weights"])
    elif LOCAL_KEYS[0] in state:
        _load(model, state.array_records[LOCAL_KEYS[0]])
    opt = make_pretrain_sgd(model.parameters(), settings)
    if LOCAL_KEYS[1] in state:
        load_optimizer(opt, state.array_records[LOCAL_KEYS[1]], state.config_records[LOCAL_KEYS[2]])
    ids = stage_ids(cfg).shards[shard]
    data = {modality: load_modality(cfg, modality).to(device)}
    try:
        stats = ssl_pass(
            {modality: model},
            data,
            ids,
            settings,
            method=method,
            round_=round_,
            optimizer=opt,
            stage_name="pretrain-local",
            who=who,
        )
        check_finite(
            "weights after the pass",
            model,
            where="pretrain",
            round_=round_,
            method=method,
            consequence=f"not stored or sent ({who})",
        )
    except NonFiniteError as err:
        return Message(RecordDict({"error": ConfigRecord({"message": str(err)})}), reply_to=msg)
    state[LOCAL_KEYS[0]] = ArrayRecord(model.state_dict())
    arrays, meta = optimizer_records(opt)
    state[LOCAL_KEYS[1]] = arrays
    state[LOCAL_KEYS[2]] = meta
    content = RecordDict(
        {
            "metrics": MetricRecord(
                {
                    "loss": stats.loss,
                    "grad_norm_mean": stats.grad_norm_mean,
                    "grad_norm_max": stats.grad_norm_max,
                    "num-examples": int(ids.shape[0]),
                }
            )
        }
    )
    if bool(rec.get("upload", False)):
        content["weights"] = ArrayRecord(model.state_dict())
    return Message(content, reply_to=msg)


def set_weights(msg: Message, context: Context) -> Message:
    """``train.p1_set_weights``: store the local Stage I model (``target`` = ``local``).

    A split task's model is set with the split runtime's own ``train.split_set_model``.
    """
    rec = _config(msg, SET_WEIGHTS)
    target = str(rec.get("target", ""))
    if target != "local":
        raise ValueError(
            f"{SET_WEIGHTS}: target {target!r} unknown; valid: local (split task models: "
            "train.split_set_model)"
        )
    if "weights" not in msg.content:
        raise ValueError(f"{SET_WEIGHTS}: the message has no 'weights' record")
    weights = msg.content.array_records["weights"]
    check_finite(
        "received weights", weights, where=f"{SET_WEIGHTS} ({target})", consequence="not installed"
    )
    context.state[LOCAL_KEYS[0]] = weights
    return Message(RecordDict({"info": ConfigRecord({"target": target})}), reply_to=msg)


def _pretrained_encoder(
    source: str, msg: Message, context: Context
) -> Mapping[str, torch.Tensor] | None:
    state = context.state
    if source == "random":
        return None
    if source == "local":
        if LOCAL_KEYS[0] not in state:
            raise ValueError(f"{INIT_FINETUNE}: source 'local' but no local Stage I model stored")
        return encoder_state(state.array_records[LOCAL_KEYS[0]].to_torch_state_dict())
    if source == "split":
        stored = task_model(state, PRETRAIN_CLIENT_TASK)
        if stored is None:
            raise ValueError(f"{INIT_FINETUNE}: source 'split' but no split Stage I model stored")
        return encoder_state(stored.to_torch_state_dict(), "transmitter.")
    if source == "server":
        if "encoder" not in msg.content:
            raise ValueError(f"{INIT_FINETUNE}: source 'server' needs an 'encoder' record")
        encoder = msg.content.array_records["encoder"]
        check_finite("received encoder", encoder, where=INIT_FINETUNE, consequence="not installed")
        return encoder.to_torch_state_dict()
    raise ValueError(f"{INIT_FINETUNE}: source {source!r} unknown; valid: {', '.join(SOURCES)}")


def init_finetune(msg: Message, context: Context) -> Message:
    """``train.p1_init_finetune``: put the Stage II start model into the split state."""
    rec = _config(msg, INIT_FINETUNE)
    cfg = _compose(context)
    source = str(rec.get("source", ""))
    encoder = _pretrained_encoder(source, msg, context)
    task = finetune_device(cfg, _partition(context))
    if encoder is not None:
        transmitter: Any = task.model.transmitter
        transmitter.encoder.load_state_dict(dict(encoder), strict=True)
    set_task_model(
        context.state, FINETUNE_CLIENT_TASK, ArrayRecord(task.model.state_dict()), fresh=True
    )
    info = ConfigRecord({"source": source, "role": task.role})
    return Message(RecordDict({"info": info}), reply_to=msg)


def precise_bn(msg: Message, context: Context) -> Message:
    """``train.p1_precise_bn``: batch-norm statistics of the Stage II model, recomputed."""
    rec = _config(msg, PRECISE_BN)
    cfg = _compose(context)
    samples = int(rec.get("samples", 512))  # type: ignore[arg-type]
    stored = task_model(context.state, FINETUNE_CLIENT_TASK)
    if stored is None:
        raise ValueError(f"{PRECISE_BN}: no Stage II model stored on this client")
    pid = _partition(context)
    task = finetune_device(cfg, pid)
    _load(task.model, stored)
    _, shard = shard_of(cfg, pid)
    ids = stage_ids(cfg).shards[shard]
    g = torch.Generator().manual_seed(derive_seed(int(cfg.seed), "precise-bn", pid))
    ids = ids[torch.randperm(ids.shape[0], generator=g)[:samples]]
    bns = [m for m in task.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    task.model.train()
    batch = int(cfg.strategy.batch_size)
    with torch.no_grad():
        for start in range(0, ids.shape[0], batch):
            part = ids[start : start + batch]
            if part.shape[0] < 2:
                break
            task.model(task.data[part], generator=g)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    check_finite("batch-norm statistics", task.model, where=PRECISE_BN, consequence="not stored")
    set_task_model(context.state, FINETUNE_CLIENT_TASK, ArrayRecord(task.model.state_dict()))
    info = ConfigRecord({"samples": int(ids.shape[0]), "layers": len(bns)})
    return Message(RecordDict({"info": info}), reply_to=msg)


def reset(msg: Message, context: Context) -> Message:
    """``query.p1_reset``: forget every paper-1 and split-task entry of the state."""
    state = context.state
    doomed = [k for k in list(state.keys()) if k.startswith("p1.")]
    for key in doomed:
        del state[key]
    removed = len(doomed) + clear_tasks(state)
    return Message(RecordDict({"info": ConfigRecord({"removed": removed})}), reply_to=msg)


ACTIONS = {
    PRETRAIN_LOCAL: pretrain_local,
    SET_WEIGHTS: set_weights,
    INIT_FINETUNE: init_finetune,
    RESET: reset,
    PRECISE_BN: precise_bn,
}
