"""SLF message types and typed access to message contents (client handlers and strategies).

Choi et al., arXiv 2310.09394, Sec. III-B. One Flower message per SLF step (a message costs
~0.1 s in simulation and ~6 s in deployment, ../shared/FLOWER_NOTES.md §4). Every value a
message carries is typed (numbers, role names, data parameters); hyper-parameters are the
node's own (:class:`~flwr_semcom.alignment.SLFDevice`).

======================  =========  ==========================================================
message type            to         content → reply
======================  =========  ==========================================================
``train.slf_setup``     both       config (the device's setup parameters, e.g. {transmitter,
                                   receiver, source, epsilon}) → metrics {partition-id,
                                   params, …}; the node installs its initial transceiver
``query.slf_receiver``  j          → arrays: j's receiver part (step 1, download to i)
``train.slf_finetune``  i          arrays: the downloaded receiver part, config
                                   {freeze_layers, crossover, seed} → arrays: the unfrozen
                                   receiver tensors (step 3 upload), metrics {flops, wall-s, …}
``train.slf_install``   j (both)   arrays, config {scope: receiver|model} → metrics
``query.slf_encode``    i          config {crossover, seed} → arrays {indices_hat} (step 4,
                                   i's test images encoded and sent through the channel)
``query.slf_score``     j          arrays {indices_hat}, config (the sender's data
                                   parameters) → metrics {mse, accuracy, num-examples, …}
``query.slf_model``     both       → arrays: the whole transceiver (FedAvg round 0 upload)
``train.slf_fedavg``    both       arrays (global), config {server-round, crossover} →
                                   arrays, metrics {num-examples, flops, …} (FedAvg round)
``evaluate.slf_fedavg`` i          arrays (global), config {crossover, seed, + the data
                                   parameters} → metrics {mse, accuracy, num-examples, …}
======================  =========  ==========================================================

``crossover`` is the link's channel parameter (the DMC crossover ``p`` for the paper's
transceivers); the device's ``channel_fn`` turns it into a channel.
"""

from __future__ import annotations

import math

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

__all__ = [
    "ENCODE",
    "FEDAVG_EVAL",
    "FEDAVG_TRAIN",
    "FINETUNE",
    "INSTALL",
    "MESSAGE_TYPES",
    "MODEL",
    "RECEIVER",
    "SCORE",
    "SETUP",
    "arrays_of",
    "config_float",
    "config_int",
    "config_of",
    "config_str",
    "metric",
    "record_numel",
]

SETUP = "train.slf_setup"
RECEIVER = "query.slf_receiver"
FINETUNE = "train.slf_finetune"
INSTALL = "train.slf_install"
ENCODE = "query.slf_encode"
SCORE = "query.slf_score"
MODEL = "query.slf_model"
FEDAVG_TRAIN = "train.slf_fedavg"
FEDAVG_EVAL = "evaluate.slf_fedavg"
MESSAGE_TYPES = (
    SETUP, RECEIVER, FINETUNE, INSTALL, ENCODE, SCORE, MODEL, FEDAVG_TRAIN, FEDAVG_EVAL
)  # fmt: skip


def record_numel(record: ArrayRecord) -> int:
    """Number of scalars in the record."""
    return int(sum(math.prod(arr.shape) for arr in record.values()))


def arrays_of(content: RecordDict, key: str = "arrays") -> ArrayRecord:
    """The ``ArrayRecord`` ``key`` of a message content (a clear error when it is missing)."""
    if key not in content.array_records:
        raise ValueError(f"message has no ArrayRecord {key!r}; got {sorted(content)}")
    return content.array_records[key]


def config_of(content: RecordDict, key: str = "config") -> ConfigRecord:
    """The ``ConfigRecord`` ``key`` of a message content."""
    if key not in content.config_records:
        raise ValueError(f"message has no ConfigRecord {key!r}; got {sorted(content)}")
    return content.config_records[key]


def metric(content: RecordDict, name: str, key: str = "metrics") -> float:
    """A scalar of the ``MetricRecord`` ``key`` of a message content."""
    if key not in content.metric_records or name not in content.metric_records[key]:
        raise ValueError(f"reply has no metric {key}.{name}")
    value = content.metric_records[key][name]
    if isinstance(value, list):
        raise ValueError(f"metric {key}.{name} must be a scalar, got a list")
    return float(value)


def config_str(config: ConfigRecord, name: str) -> str:
    """A string entry of a ``ConfigRecord``."""
    if name not in config:
        raise ValueError(f"message config is missing {name!r}")
    return str(config[name])


def config_int(config: ConfigRecord, name: str) -> int:
    """An integer entry of a ``ConfigRecord`` (bools rejected)."""
    if name not in config:
        raise ValueError(f"message config is missing {name!r}")
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def config_float(config: ConfigRecord, name: str, lo: float = 0.0, hi: float = 1.0) -> float:
    """A number in ``[lo, hi]`` from a ``ConfigRecord``."""
    if name not in config:
        raise ValueError(f"message config is missing {name!r}")
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], got {value}")
    return float(value)
