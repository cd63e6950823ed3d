"""The device side of SLF and FedAvg alignment: ClientApp handlers built from a user's pieces.

Choi et al., arXiv 2310.09394, Sec. III. :func:`add_slf_client` registers the nine SLF
handlers (:mod:`flwr_semcom.alignment.messages`) on a ``ClientApp``; each handler gets its
node's :class:`~flwr_semcom.alignment.SLFDevice` from ``device_fn(context)`` (build it once per
run and cache it: the handlers call ``device_fn`` on every message).

Partition 0 is the transmitter ``i``, partition 1 the receiver ``j``. The node keeps its
transceiver in ``context.state["slf.model"]`` (an ``ArrayRecord``) and its role and data
parameters in ``context.state["slf.node"]`` (a ``ConfigRecord``); nothing lives in globals.

Non-finite guard (issue #9, :mod:`flwr_semcom.guard`): received parameters are checked
before they are installed and a model before it is stored or sent back; NaN or inf is refused
with :class:`~flwr_semcom.guard.NonFiniteError`, which Flower turns into an error reply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import Tensor

from flwr_semcom.alignment import messages as M
from flwr_semcom.alignment import transceiver as T
from flwr_semcom.alignment.device import (
    EVAL_PARTS,
    MODEL_KEY,
    NODE_KEY,
    ROLES,
    DeviceFn,
    Scalar,
    SLFDevice,
)
from flwr_semcom.alignment.loops import fit_transceiver, transmit
from flwr_semcom.guard import check_finite

__all__ = ["add_slf_client", "slf_handlers"]

Handler = Callable[[Message, Context], Message]


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
        raise RuntimeError(f"this node has no SLF transceiver yet; send {M.SETUP} first")
    return context.state.config_records[NODE_KEY]


def _data_params(node: ConfigRecord) -> dict[str, Scalar]:
    return {k: v for k, v in node.items() if k != "role"}  # type: ignore[misc]


def _received(msg: Message) -> dict[str, Tensor]:
    """The message's ``"arrays"`` as tensors, checked for NaN / inf before anything installs
    them."""
    record = M.arrays_of(msg.content)
    check_finite(
        "received parameters",
        record,
        where=f"{msg.metadata.message_type} from node {msg.metadata.src_node_id}",
        consequence="not installed",
    )
    return dict(record.to_torch_state_dict())


def _outgoing(state: Mapping[str, Tensor], action: str) -> ArrayRecord:
    """``state`` as a record for a reply, checked for NaN / inf first."""
    check_finite("parameters", state, where=action, consequence="not sent")
    return ArrayRecord(dict(state))


def _model_from(device: SLFDevice, state: Mapping[str, Tensor]) -> T.FreezableTransceiver:
    model = device.transceiver_fn()
    T.as_module(model).load_state_dict(dict(state))
    return model


def _load_model(device: SLFDevice, context: Context) -> T.FreezableTransceiver:
    _node(context)
    return _model_from(device, context.state.array_records[MODEL_KEY].to_torch_state_dict())


def _save(state: Mapping[str, Tensor], context: Context) -> None:
    check_finite("transceiver", state, where="slf node state", consequence="not stored")
    context.state[MODEL_KEY] = ArrayRecord(dict(state))


def _torch_device(model: T.FreezableTransceiver) -> torch.device:
    return next(T.as_module(model).parameters()).device


def _reply(msg: Message, **records: Any) -> Message:
    return Message(RecordDict(records), reply_to=msg)


def _numel(state: Mapping[str, Tensor]) -> int:
    return sum(v.numel() for v in state.values())


def slf_handlers(device_fn: DeviceFn) -> dict[str, Handler]:
    """The nine SLF handlers, ``{message type: handler(msg, context) -> reply}``."""

    def setup(msg: Message, context: Context) -> Message:
        """Install this node's initial transceiver and remember its role and data."""
        device = device_fn(context)
        role = _role(context)
        params: dict[str, Scalar] = dict(M.config_of(msg.content))  # type: ignore[arg-type]
        done = device.setup_fn(role, params)
        _save(done.state, context)
        context.state[NODE_KEY] = ConfigRecord({**done.data, "role": role})
        metrics = {
            "partition-id": ROLES.index(role),
            "params": _numel(done.state),
            **done.metrics,
        }
        return _reply(msg, metrics=MetricRecord(metrics))  # type: ignore[arg-type]

    def receiver(msg: Message, context: Context) -> Message:
        """SLF step 1 (at j): hand out the receiver part."""
        model = _load_model(device_fn(context), context)
        return _reply(msg, arrays=_outgoing(T.receiver_state(model), M.RECEIVER))

    def finetune(msg: Message, context: Context) -> Message:
        """SLF steps 2-3 (at i): fine-tune ENC_i + the downloaded receiver part, return the
        unfrozen tensors. ``n = 0`` re-initialises and re-trains from scratch."""
        device = device_fn(context)
        node = _node(context)
        model = _load_model(device, context)
        where = _torch_device(model)
        downloaded = _received(msg)
        T.load_receiver_state(model, {k: v.to(where) for k, v in downloaded.items()})
        c = M.config_of(msg.content)
        n = T.check_freeze(model, M.config_int(c, "freeze_layers"))
        seed = M.config_int(c, "seed")
        if n == 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                T.reset_parameters(model)
        model.freeze_last(n)
        ft = device.finetune
        stats = fit_transceiver(
            model,
            device.data_fn(_data_params(node), "train").to(where),
            loss=device.loss,
            channel=device.channel_fn(model, M.config_float(c, "crossover")),
            steps=ft.reinit_steps if n == 0 else ft.steps,
            lr=ft.reinit_lr if n == 0 else ft.lr,
            batch_size=device.batch_size,
            seed=seed,
            init=device.init if n == 0 else None,
        )
        upload = T.unfrozen_receiver_state(model)
        unfrozen = _numel(upload)
        own_part = _numel(T.as_module(model).state_dict()) - _numel(T.receiver_state(model))
        model.freeze_last(0)
        _save(T.as_module(model).state_dict(), context)
        metrics = MetricRecord(
            {
                "freeze-layers": n,
                "unfrozen-params": unfrozen,
                "trainable-params": unfrozen + own_part,
                "steps": stats.steps,
                "batch-size": stats.batch_size,
                "flops": float(stats.flops),
                "flops-per-step": float(stats.flops_per_step),
                "wall-s": stats.wall_s,
                "loss": stats.last_loss,
            }
        )
        return _reply(msg, arrays=_outgoing(upload, M.FINETUNE), metrics=metrics)

    def install(msg: Message, context: Context) -> Message:
        """Install parameters: SLF's upload at j (``scope=receiver``) or a whole model."""
        model = _load_model(device_fn(context), context)
        scope = M.config_str(M.config_of(msg.content), "scope")
        state = _received(msg)
        if scope == "receiver":
            T.load_receiver_state(model, state, partial=True)
        elif scope == "model":
            T.as_module(model).load_state_dict(state)
        else:
            raise ValueError(f"install scope must be 'receiver' or 'model', got {scope!r}")
        _save(T.as_module(model).state_dict(), context)
        return _reply(msg, metrics=MetricRecord({"installed-params": _numel(state)}))

    def _send(
        device: SLFDevice, model: T.FreezableTransceiver, images: Tensor, c: ConfigRecord
    ) -> tuple[Tensor, MetricRecord]:
        channel = device.channel_fn(model, M.config_float(c, "crossover"))
        _, received = transmit(
            model, images.to(_torch_device(model)), channel, M.config_int(c, "seed")
        )
        metrics = MetricRecord(
            {
                "num-examples": len(images),
                "channel-uses": int(received.numel()),
                "bits-per-use": int(device.bits_per_use(model)),
            }
        )
        return received, metrics

    def _eval_part(c: ConfigRecord) -> str:
        """The part an evaluation sends: ``"test"`` (default) or ``"val"``."""
        part = str(c.get("part", "test"))
        if part not in EVAL_PARTS:
            raise ValueError(f"part must be one of {EVAL_PARTS}, got {part!r}")
        return part

    def _score(
        device: SLFDevice, model: T.FreezableTransceiver, received: Tensor, c: ConfigRecord
    ) -> MetricRecord:
        scores = device.score_fn(model, received.to(_torch_device(model)), dict(c))  # type: ignore[arg-type]
        return MetricRecord({**scores, "num-examples": int(received.shape[0])})

    def encode(msg: Message, context: Context) -> Message:
        """SLF step 4 (at i): encode the local test (or validation) images, send them through
        the link."""
        device = device_fn(context)
        node = _node(context)
        model = _load_model(device, context)
        c = M.config_of(msg.content)
        images = device.data_fn(_data_params(node), _eval_part(c))
        received, metrics = _send(device, model, images, c)
        return _reply(msg, arrays=ArrayRecord({"indices_hat": received.cpu()}), metrics=metrics)

    def score(msg: Message, context: Context) -> Message:
        """SLF step 4 (at j): decode the received signals and score them."""
        device = device_fn(context)
        model = _load_model(device, context)
        received = M.arrays_of(msg.content).to_torch_state_dict()["indices_hat"]
        return _reply(msg, metrics=_score(device, model, received, M.config_of(msg.content)))

    def model_query(msg: Message, context: Context) -> Message:
        """Hand out the whole transceiver (FedAvg round 0)."""
        model = _load_model(device_fn(context), context)
        return _reply(msg, arrays=_outgoing(T.as_module(model).state_dict(), M.MODEL))

    def fedavg_train(msg: Message, context: Context) -> Message:
        """One FedAvg round: train the global transceiver on the local data and link."""
        device = device_fn(context)
        node = _node(context)
        model = _model_from(device, _received(msg))
        c = M.config_of(msg.content)
        images = device.data_fn(_data_params(node), "train")
        stats = fit_transceiver(
            model,
            images.to(_torch_device(model)),
            loss=device.loss,
            channel=device.channel_fn(model, M.config_float(c, "crossover")),
            steps=device.fedavg_steps,
            lr=device.fedavg_lr,
            batch_size=device.batch_size,
            seed=device.seed
            + 1000 * M.config_int(c, "server-round")
            + ROLES.index(M.config_str(node, "role")),
        )
        metrics = MetricRecord(
            {
                "num-examples": len(images),
                "flops": float(stats.flops),
                "wall-s": stats.wall_s,
                "loss": stats.last_loss,
            }
        )
        return _reply(
            msg, arrays=_outgoing(T.as_module(model).state_dict(), M.FEDAVG_TRAIN), metrics=metrics
        )

    def fedavg_evaluate(msg: Message, context: Context) -> Message:
        """Score the global model on the sender's test images (i → link → the same model)."""
        device = device_fn(context)
        _node(context)
        model = _model_from(device, _received(msg))
        c = M.config_of(msg.content)
        images = device.data_fn(dict(c), _eval_part(c))  # type: ignore[arg-type]
        received, _ = _send(device, model, images, c)
        return _reply(msg, metrics=_score(device, model, received, c))

    return {
        M.SETUP: setup,
        M.RECEIVER: receiver,
        M.FINETUNE: finetune,
        M.INSTALL: install,
        M.ENCODE: encode,
        M.SCORE: score,
        M.MODEL: model_query,
        M.FEDAVG_TRAIN: fedavg_train,
        M.FEDAVG_EVAL: fedavg_evaluate,
    }


def add_slf_client(app: ClientApp, device_fn: DeviceFn) -> ClientApp:
    """Register the SLF / FedAvg alignment handlers on ``app``; return it.

    Parameters
    ----------
    app
        The user's ``ClientApp`` (its other handlers are untouched).
    device_fn
        ``device_fn(context) -> SLFDevice`` for the node the message reached; build the
        device once per run (e.g. from ``context.run_config``) and cache it.
    """
    for message_type, handler in slf_handlers(device_fn).items():
        kind, _, action = message_type.partition(".")
        getattr(app, kind)(action)(handler)
    return app
