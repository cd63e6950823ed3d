"""SLF message types and record helpers shared by the ClientApp handlers and the strategies.

Paper 2 (Choi et al., arXiv 2310.09394), Sec. III-B. One Flower message per SLF step (a
message costs ~0.1 s in simulation and ~6 s in deployment, ../shared/FLOWER_NOTES.md §4):

======================  =========  ==========================================================
message type            to         content → reply
======================  =========  ==========================================================
``train.slf_setup``     both       config {transmitter, receiver, source, epsilon} → metrics;
                                   partition 0 installs the transmitter's pre-trained
                                   transceiver, partition 1 the receiver's
``query.slf_receiver``  j          → arrays: j's codebook + decoder (step 1, download to i)
``train.slf_finetune``  i          arrays: downloaded codebook + decoder, config
                                   {freeze_layers, crossover, seed} → arrays: the unfrozen
                                   codebook/decoder tensors (step 3 upload), metrics
                                   {flops, wall_s, …} (step 2)
``train.slf_install``   j (both)   arrays, config {scope: receiver|model} → metrics
``query.slf_encode``    i          config {crossover, seed} → arrays {indices_hat} (step 4,
                                   i's test images encoded and sent through the DMC)
``query.slf_score``     j          arrays {indices_hat}, config {source, epsilon} → metrics
                                   {mse, accuracy, num-examples} (step 4, j decodes)
``query.slf_model``     both       → arrays: the whole transceiver (FedAvg round 0 upload)
``train.slf_fedavg``    both       arrays (global), config {server-round, crossover} →
                                   arrays, metrics {num-examples, flops, …} (FedAvg round)
``evaluate.slf_fedavg`` i          arrays (global), config {crossover, seed, source, epsilon}
                                   → metrics {mse, accuracy, num-examples}
======================  =========  ==========================================================

The server relays every payload; the communication ledger counts each *logical* transfer
once, as the paper does (j → i download, i → j upload).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

__all__ = [
    "arrays_of",
    "config_float",
    "config_int",
    "config_of",
    "config_str",
    "metric",
    "ENCODE",
    "FEDAVG_EVAL",
    "FEDAVG_TRAIN",
    "FINETUNE",
    "INSTALL",
    "MODEL",
    "RECEIVER",
    "SCORE",
    "SETUP",
    "from_record",
    "record_nbytes",
    "record_numel",
    "to_record",
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


def to_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """An ``ArrayRecord`` of CPU copies of ``state`` (names kept, order kept)."""
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def from_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The tensors of an ``ArrayRecord`` (writable CPU tensors)."""
    return {k: torch.from_numpy(arr.numpy().copy()) for k, arr in record.items()}


def record_nbytes(record: ArrayRecord) -> int:
    """Serialised payload size: ``sum(numel * itemsize)`` over the record's arrays."""
    return int(sum(arr.numpy().nbytes for arr in record.values()))


def record_numel(record: ArrayRecord) -> int:
    """Number of scalars in the record."""
    return int(sum(arr.numpy().size for arr in record.values()))


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
