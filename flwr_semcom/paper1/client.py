"""Client actions of paper 1 (registered in the ClientApp through :data:`ACTIONS`).

Paper 1 (Zhao et al., arXiv 2503.13940), Algorithm 1. Split exchanges (Stage I ``split``,
Stage II) go through the split runtime's own actions; these add what lies around them:

``train.p1_pretrain_local`` (Stage I, placement ``local``)
    ``"config"``: ``experiment``, ``overrides`` (composed into the config, ``pretrain.method``
    included), ``round``, ``upload`` (bool). Optional ``"weights"`` ArrayRecord: the
    modality's FedAvg average to start from. One pass of the intra-modal loss over the
    device's shard (:func:`~flwr_semcom.paper1.pretrain.ssl_pass`). Reply: ``"metrics"``
    (``loss``, ``grad_norm_mean``, ``grad_norm_max``, ``num-examples``) and, with ``upload``,
    ``"weights"``. A non-finite loss or gradient is answered with ``"error"`` ConfigRecord
    (``message``) instead of being applied.
``train.p1_set_weights``
    ``"config"``: ``target`` = ``local`` or a split task name; ``"weights"``: a full model
    state (FedAvg results). Stores it where that model lives.
``train.p1_init_finetune``
    ``"config"``: ``experiment``, ``overrides`` (of Stage II), ``source`` ∈ {``random``,
    ``local``, ``split``, ``server``}; ``"encoder"`` ArrayRecord for ``server`` (the weights
    downloaded from the server). Writes the Stage II client model (encoder from ``source``,
    JSCC head freshly initialised) into the split runtime's state and clears its optimizer
    and exchange state, so the next ``train.split_step`` starts Stage II from it.
``train.p1_precise_bn``
    ``"config"``: ``experiment``, ``overrides`` (of Stage II), ``samples``. Recomputes the
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

State: ``p1.local.model`` / ``p1.local.optim`` / ``p1.local.optim_meta`` (placement ``local``)
and the split runtime's ``split.<task>.<part>`` entries (:func:`split_key`), in
``context.state`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from torch import nn

from flwr_semcom.config import config_from_run_config, resolve_device
from flwr_semcom.guard import check_finite
from flwr_semcom.paper1.data import shard_of, stage_ids
from flwr_semcom.paper1.models import build_ssl_transmitter, encoder_state, make_pretrain_sgd
from flwr_semcom.paper1.pretrain import ssl_pass
from flwr_semcom.paper1.stability import NonFiniteError
from flwr_semcom.paper1.tasks import FINETUNE_CLIENT_TASK, PRETRAIN_CLIENT_TASK, FinetuneClient
from flwr_semcom.split.protocol import to_tensor
from flwr_semcom.split.rgbd import load_modality
from flwr_semcom.split.schedule import derive_seed
from flwr_semcom.split.state import load_module, load_optimizer, module_record, optimizer_records

__all__ = [
    "ACTIONS",
    "INIT_FINETUNE",
    "PRECISE_BN",
    "LOCAL_KEYS",
    "PRETRAIN_LOCAL",
    "RESET",
    "SET_WEIGHTS",
    "SPLIT_PARTS",
    "init_finetune",
    "precise_bn",
    "pretrain_local",
    "reset",
    "set_weights",
    "split_key",
]

PRETRAIN_LOCAL = "train.p1_pretrain_local"
SET_WEIGHTS = "train.p1_set_weights"
INIT_FINETUNE = "train.p1_init_finetune"
RESET = "query.p1_reset"
PRECISE_BN = "train.p1_precise_bn"

LOCAL_KEYS = ("p1.local.model", "p1.local.optim", "p1.local.optim_meta")
#: The parts the split runtime keeps per task (``flwr_semcom.split.client``).
SPLIT_PARTS = ("model", "optim", "optim_meta", "meta", "pending", "pending_buffers")
SOURCES = ("random", "local", "split", "server")


def split_key(task: str, part: str) -> str:
    """The ``context.state`` key of the split runtime's ``part`` of ``task``."""
    return f"split.{task}.{part}"


def _config(msg: Message, action: str) -> ConfigRecord:
    if "config" not in msg.content:
        raise ValueError(f"{action}: the message has no 'config' record")
    rec: ConfigRecord = msg.content.config_records["config"]
    return rec


def _compose(rec: ConfigRecord, action: str) -> Any:
    for key in ("experiment", "overrides"):
        if not isinstance(rec.get(key), str):
            raise ValueError(f"{action}: config record needs a string {key!r}")
    cfg = config_from_run_config(
        {"experiment": str(rec["experiment"]), "overrides": str(rec["overrides"])}
    )
    torch.set_num_threads(int(cfg.num_threads))
    return cfg


def _partition(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise ValueError("node_config: missing 'partition-id' (an integer >= 0)")
    return int(context.node_config["partition-id"])  # type: ignore[arg-type]


def _state_dict(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: to_tensor(v) for k, v in record.items()}


def pretrain_local(msg: Message, context: Context) -> Message:
    """``train.p1_pretrain_local``: one local Stage I pass with the intra-modal loss."""
    rec = _config(msg, PRETRAIN_LOCAL)
    cfg = _compose(rec, PRETRAIN_LOCAL)
    method = str(cfg.pretrain.method)
    round_ = int(rec.get("round", 0))  # type: ignore[arg-type]
    pid = _partition(context)
    modality, shard = shard_of(cfg, pid)
    device = torch.device(resolve_device(str(cfg.device)))
    model = build_ssl_transmitter(cfg, modality).to(device)
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
        load_module(model, msg.content.array_records["weights"])
    elif LOCAL_KEYS[0] in state:
        load_module(model, state.array_records[LOCAL_KEYS[0]])
    opt = make_pretrain_sgd(model.parameters(), cfg)
    if LOCAL_KEYS[1] in state:
        load_optimizer(opt, state.array_records[LOCAL_KEYS[1]], state.config_records[LOCAL_KEYS[2]])
    ids = stage_ids(cfg).shards[shard]
    data = {modality: load_modality(cfg, modality).to(device)}
    try:
        stats = ssl_pass(
            {modality: model},
            data,
            ids,
            cfg,
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
    state[LOCAL_KEYS[0]] = module_record(model)
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
        content["weights"] = module_record(model)
    return Message(content, reply_to=msg)


def set_weights(msg: Message, context: Context) -> Message:
    """``train.p1_set_weights``: store a full model state (``local`` or a split task)."""
    rec = _config(msg, SET_WEIGHTS)
    target = str(rec.get("target", ""))
    if "weights" not in msg.content:
        raise ValueError(f"{SET_WEIGHTS}: the message has no 'weights' record")
    weights = msg.content.array_records["weights"]
    check_finite(
        "received weights", weights, where=f"{SET_WEIGHTS} ({target})", consequence="not installed"
    )
    if target == "local":
        context.state[LOCAL_KEYS[0]] = weights
    elif target in (PRETRAIN_CLIENT_TASK, FINETUNE_CLIENT_TASK):
        context.state[split_key(target, "model")] = weights
    else:
        raise ValueError(
            f"{SET_WEIGHTS}: target {target!r} unknown; valid: local, {PRETRAIN_CLIENT_TASK}, "
            f"{FINETUNE_CLIENT_TASK}"
        )
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
        return encoder_state(_state_dict(state.array_records[LOCAL_KEYS[0]]))
    if source == "split":
        key = split_key(PRETRAIN_CLIENT_TASK, "model")
        if key not in state:
            raise ValueError(f"{INIT_FINETUNE}: source 'split' but no split Stage I model stored")
        return encoder_state(_state_dict(state.array_records[key]), "transmitter.")
    if source == "server":
        if "encoder" not in msg.content:
            raise ValueError(f"{INIT_FINETUNE}: source 'server' needs an 'encoder' record")
        encoder = msg.content.array_records["encoder"]
        check_finite("received encoder", encoder, where=INIT_FINETUNE, consequence="not installed")
        return _state_dict(encoder)
    raise ValueError(f"{INIT_FINETUNE}: source {source!r} unknown; valid: {', '.join(SOURCES)}")


def init_finetune(msg: Message, context: Context) -> Message:
    """``train.p1_init_finetune``: put the Stage II start model into the split state."""
    rec = _config(msg, INIT_FINETUNE)
    cfg = _compose(rec, INIT_FINETUNE)
    source = str(rec.get("source", ""))
    encoder = _pretrained_encoder(source, msg, context)
    task = FinetuneClient(cfg, dict(context.node_config))
    if encoder is not None:
        transmitter: Any = task.model.transmitter
        transmitter.encoder.load_state_dict(dict(encoder), strict=True)
    state = context.state
    for part in SPLIT_PARTS:
        key = split_key(FINETUNE_CLIENT_TASK, part)
        if key in state:
            del state[key]
    state[split_key(FINETUNE_CLIENT_TASK, "model")] = module_record(task.model)
    info = ConfigRecord({"source": source, "role": task.role})
    return Message(RecordDict({"info": info}), reply_to=msg)


def precise_bn(msg: Message, context: Context) -> Message:
    """``train.p1_precise_bn``: batch-norm statistics of the Stage II model, recomputed."""
    rec = _config(msg, PRECISE_BN)
    cfg = _compose(rec, PRECISE_BN)
    samples = int(rec.get("samples", 512))  # type: ignore[arg-type]
    key = split_key(FINETUNE_CLIENT_TASK, "model")
    if key not in context.state:
        raise ValueError(f"{PRECISE_BN}: no Stage II model stored on this client")
    pid = _partition(context)
    task = FinetuneClient(cfg, dict(context.node_config))
    load_module(task.model, context.state.array_records[key])
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
    context.state[key] = module_record(task.model)
    info = ConfigRecord({"samples": int(ids.shape[0]), "layers": len(bns)})
    return Message(RecordDict({"info": info}), reply_to=msg)


def reset(msg: Message, context: Context) -> Message:
    """``query.p1_reset``: forget every paper-1 and split-task entry of the state."""
    state = context.state
    doomed = [k for k in list(state.keys()) if k.startswith(("p1.", "split."))]
    for key in doomed:
        del state[key]
    return Message(RecordDict({"info": ConfigRecord({"removed": len(doomed)})}), reply_to=msg)


ACTIONS = {
    PRETRAIN_LOCAL: pretrain_local,
    SET_WEIGHTS: set_weights,
    INIT_FINETUNE: init_finetune,
    RESET: reset,
    PRECISE_BN: precise_bn,
}
