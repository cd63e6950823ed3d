"""ClientApp handlers of the federated multi-task experiment (paper 3, arXiv 2501.02006).

A device (``partition-id`` ``d`` of ``num-partitions`` ``D``, from its node config) holds the
``d``-th IID shard of the train and test parts (:mod:`.data`). Messages carry the global link
and ``{method, ratio}`` (:mod:`.protocol`); hyper-parameters come from the composed config (the
run config's ``experiment`` / ``overrides``). The only client state is a counter of handled
rounds in ``context.state["multitask.node"]`` (the data are a pure function of the config).
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from omegaconf import DictConfig

from flwr_semcom.config import config_from_run_config
from flwr_semcom.multitask import protocol as P
from flwr_semcom.multitask.data import device_data
from flwr_semcom.multitask.settings import check_multitask_config
from flwr_semcom.multitask.system import METHODS, MultiTaskSemCom
from flwr_semcom.multitask.training import build_model, evaluate, train_local

__all__ = ["ACTIONS", "NODE_KEY"]

NODE_KEY = "multitask.node"


def _config(context: Context) -> DictConfig:
    cfg = config_from_run_config(context.run_config)
    check_multitask_config(cfg)
    torch.set_num_threads(int(cfg.num_threads))
    return cfg


def _partition(context: Context) -> tuple[int, int]:
    nc = context.node_config
    if "partition-id" not in nc or "num-partitions" not in nc:
        raise ValueError(
            "node_config needs partition-id and num-partitions; start the SuperNodes with "
            "--node-config 'partition-id=<d> num-partitions=<D>'"
        )
    return int(nc["partition-id"]), int(nc["num-partitions"])


def _link(cfg: DictConfig, msg: Message) -> tuple[MultiTaskSemCom, ConfigRecord]:
    config = msg.content.config_records["config"]
    method, ratio = str(config["method"]), P.as_number(config["ratio"], "ratio")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    model = build_model(cfg, method, ratio, seed=0)
    model.load_state_dict(P.from_record(msg.content.array_records["arrays"]))
    return model, config


def _count(context: Context, key: str) -> int:
    node = context.state.config_records.get(NODE_KEY, ConfigRecord({}))
    value = int(P.as_number(node.get(key, 0), key)) + 1
    node[key] = value
    context.state[NODE_KEY] = node
    return value


def _reply(msg: Message, **records: Any) -> Message:
    return Message(RecordDict(records), reply_to=msg)


def fit(msg: Message, context: Context) -> Message:
    """FedAvg local update: ``local_epochs`` of Adam on this device's train shard."""
    cfg = _config(context)
    pid, num = _partition(context)
    model, config = _link(cfg, msg)
    m = cfg.multitask
    data = device_data(cfg, pid, num, "train")
    rnd = int(P.as_number(config.get("server-round", 0), "server-round"))
    stats = train_local(
        model,
        data,
        epochs=int(m.local_epochs),
        batch_size=int(m.batch_size),
        lr=float(m.lr),
        loss_weights=[float(w) for w in m.loss_weights],
        snr_range=[float(s) for s in m.train_snr_db],
        seed=int(cfg.seed) + 1000 * rnd + pid,
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
    return _reply(msg, arrays=P.to_record(model.state_dict()), metrics=metrics)


def evaluate_link(msg: Message, context: Context) -> Message:
    """Send this device's test shard over AWGN at every ``channel.snr_db``; metric sums."""
    cfg = _config(context)
    pid, num = _partition(context)
    model, _ = _link(cfg, msg)
    data = device_data(cfg, pid, num, "test")
    snrs = [float(s) for s in cfg.channel.snr_db]
    sums = evaluate(
        model,
        data,
        snrs,
        batch_size=int(cfg.multitask.eval_batch_size),
        seed=int(cfg.seed) + 7919 * (pid + 1),
    )
    n = int(data["label"].shape[0])
    values: dict[str, int | float | list[int] | list[float]] = {
        "num-examples": n,
        "channel-uses": n * model.num_symbols,
    }
    for i, snr in enumerate(snrs):
        for task, stats in sums[snr].items():
            for stat, v in stats.items():
                values[P.metric_key(i, task, stat)] = v
    _count(context, "evaluations")
    return _reply(msg, metrics=MetricRecord(values))


ACTIONS = {P.FIT: fit, P.EVAL: evaluate_link}
