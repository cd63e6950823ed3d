"""ClientApp handlers of the federated multi-task experiment (paper 3, arXiv 2501.02006).

A device (``partition-id`` ``d`` of ``num-partitions`` ``D``, from its node config) holds the
``d``-th IID shard of the train and test parts (:mod:`.data`). Messages carry the global link
and the typed values ``{method, ratio, server-round}`` (:mod:`.protocol`); the experiment's
hyper-parameters are the typed :class:`~flwr_semcom.multitask.spec.MultitaskSettings` of the
run, composed from ``context.run_config`` once per process and run config
(:func:`~flwr_semcom.multitask.settings.settings_for_run`). Every reply names its partition
(``"node"`` record), so the server aggregates in a fixed order. The only client state is a
counter of handled rounds in ``context.state["multitask.node"]`` (the data are a pure
function of the settings).

Randomness: the local update draws its batches, SNRs and noise from a generator seeded with
``seed + 1000 · round + d``, the evaluation noise from ``seed + 7919 · (d + 1)``; nothing
uses the global RNG, so results do not depend on which process or actor runs a device.
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from flwr_semcom.multitask import protocol as P
from flwr_semcom.multitask.data import device_data
from flwr_semcom.multitask.settings import settings_for_run
from flwr_semcom.multitask.spec import MultitaskSettings
from flwr_semcom.multitask.system import METHODS, MultiTaskSemCom
from flwr_semcom.multitask.training import build_model, evaluate, train_local

__all__ = ["ACTIONS", "NODE_KEY", "evaluate_link", "fit"]

NODE_KEY = "multitask.node"


def _settings(context: Context) -> MultitaskSettings:
    settings = settings_for_run(context.run_config)
    torch.set_num_threads(settings.num_threads)
    return settings


def _partition(context: Context) -> tuple[int, int]:
    nc = context.node_config
    if "partition-id" not in nc or "num-partitions" not in nc:
        raise ValueError(
            "node_config needs partition-id and num-partitions; start the SuperNodes with "
            "--node-config 'partition-id=<d> num-partitions=<D>'"
        )
    return int(nc["partition-id"]), int(nc["num-partitions"])


def _link(settings: MultitaskSettings, msg: Message) -> tuple[MultiTaskSemCom, ConfigRecord]:
    config = msg.content.config_records["config"]
    method, ratio = str(config["method"]), P.as_number(config["ratio"], "ratio")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    model = build_model(settings.link, method, ratio, seed=0)
    model.load_state_dict(P.from_record(msg.content.array_records["arrays"]))
    return model, config


def _count(context: Context, key: str) -> int:
    node = context.state.config_records.get(NODE_KEY, ConfigRecord({}))
    value = int(P.as_number(node.get(key, 0), key)) + 1
    node[key] = value
    context.state[NODE_KEY] = node
    return value


def _reply(msg: Message, pid: int, **records: Any) -> Message:
    return Message(RecordDict({**records, "node": P.node_record(pid)}), reply_to=msg)


def fit(msg: Message, context: Context) -> Message:
    """FedAvg local update: ``local_epochs`` of Adam on this device's train shard."""
    settings = _settings(context)
    pid, num = _partition(context)
    model, config = _link(settings, msg)
    local = settings.local
    data = device_data(settings.data, pid, num, "train")
    rnd = int(P.as_number(config.get("server-round", 0), "server-round"))
    stats = train_local(
        model,
        data,
        epochs=local.epochs,
        batch_size=local.batch_size,
        lr=local.lr,
        loss_weights=list(local.loss_weights),
        snr_range=list(local.train_snr_db),
        seed=settings.seed + 1000 * rnd + pid,
    )
    _count(context, "fits")
    metrics = MetricRecord(
        {
            "num-examples": int(data["label"].shape[0]),
            "loss": stats.loss,
            **{f"loss-{t}": v for t, v in stats.task_losses.items()},
            "steps": stats.steps,
            "wall-s": stats.wall_s,
        }
    )
    return _reply(msg, pid, arrays=P.to_record(model.state_dict()), metrics=metrics)


def evaluate_link(msg: Message, context: Context) -> Message:
    """Send this device's test shard over AWGN at every evaluation SNR; metric sums. With a
    validation part (``multitask.val_fraction`` > 0) its shard is scored too, under keys
    prefixed ``val/`` (reporting only: the server selects nothing on either)."""
    settings = _settings(context)
    pid, num = _partition(context)
    model, _ = _link(settings, msg)
    data = device_data(settings.data, pid, num, "test")
    snrs = list(settings.local.eval_snr_db)
    n = int(data["label"].shape[0])
    values: dict[str, int | float | list[int] | list[float]] = {
        "num-examples": n,
        "channel-uses": n * model.num_symbols * len(snrs),
    }
    parts = [("", data, settings.seed + 7919 * (pid + 1))]
    if settings.data.val_fraction:
        val = device_data(settings.data, pid, num, "val")
        values[P.VAL_PREFIX + "num-examples"] = int(val["label"].shape[0])
        parts.append((P.VAL_PREFIX, val, settings.seed + 7919 * (pid + 1) + 1))
    for prefix, part, seed in parts:
        sums = evaluate(model, part, snrs, batch_size=settings.local.eval_batch_size, seed=seed)
        for i, snr in enumerate(snrs):
            for task, stats in sums[snr].items():
                for stat, v in stats.items():
                    values[prefix + P.metric_key(i, task, stat)] = v
    _count(context, "evaluations")
    return _reply(msg, pid, metrics=MetricRecord(values))


ACTIONS = {P.FIT: fit, P.EVAL: evaluate_link}
