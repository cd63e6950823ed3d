"""Message types and record helpers of the federated multi-task experiment.

Paper 3 (arXiv 2501.02006) trained with FedAvg (McMahan et al. 2017) over devices holding
horizontal shards:

- ``train.mt_fit`` (server → device): ``"arrays"`` = the global link's ``state_dict``,
  ``"config"`` = ``{method, ratio, server-round}`` (typed values, no config strings). Reply:
  ``"arrays"`` = the locally trained link, ``"metrics"`` = ``{num-examples, loss,
  loss-<task>, steps, wall-s}``, ``"node"`` = ``{partition-id}``.
- ``evaluate.mt_eval`` (server → device): the same ``"arrays"`` / ``"config"``. Reply:
  ``"metrics"`` with ``num-examples`` and, per evaluation SNR index ``i`` (of
  ``channel.snr_db``), task and statistic, the additive sum ``"s<i>/<task>/<stat>"``, plus
  ``channel-uses`` (complex symbols sent over the air, over all SNRs: ``k`` per test image
  and SNR); with a validation part, the same sums of the validation shard under keys
  prefixed ``val/`` and ``val/num-examples``; ``"node"`` = ``{partition-id}``.

The ``"node"`` record is the contract of :class:`strategies.fedavg_multitask.FedAvgMultitask`,
which aggregates in partition order. The server sums the devices' metric records key by key;
:func:`metrics_from_sums` turns the sums into exact per-task metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord

from flwr_semcom.multitask.tasks import Task

__all__ = [
    "EVAL",
    "FIT",
    "VAL_PREFIX",
    "as_number",
    "from_record",
    "metric_key",
    "metrics_from_sums",
    "node_record",
    "parse_metric_key",
    "to_record",
]

#: Prefix of the validation part's metric sums in an evaluation reply (``"val/s<i>/…"``).
VAL_PREFIX = "val/"
FIT = "train.mt_fit"
EVAL = "evaluate.mt_eval"


def to_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """A ``state_dict`` as an ``ArrayRecord`` (every tensor as float32, so FedAvg can average)."""
    return ArrayRecord({k: Array(v.detach().cpu().float().contiguous()) for k, v in state.items()})


def from_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a record (``load_state_dict`` casts back to each buffer's dtype)."""
    return {k: torch.from_numpy(v.numpy().copy()) for k, v in record.items()}


def as_number(value: object, key: str) -> float:
    """A record value that must be a number (``TypeError`` naming ``key`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"record value {key!r} must be a number, got {value!r}")
    return float(value)


def metric_key(snr_index: int, task: str, stat: str) -> str:
    """``"s<i>/<task>/<stat>"``."""
    return f"s{snr_index}/{task}/{stat}"


def parse_metric_key(key: str) -> tuple[int, str, str] | None:
    """Inverse of :func:`metric_key`; ``None`` for other keys."""
    parts = key.split("/")
    if len(parts) != 3 or not parts[0].startswith("s") or not parts[0][1:].isdigit():
        return None
    return int(parts[0][1:]), parts[1], parts[2]


def node_record(partition_id: int) -> ConfigRecord:
    """The reply's ``"node"`` record: which device answered (fixes the aggregation order)."""
    return ConfigRecord({"partition-id": int(partition_id)})


def metrics_from_sums(
    sums: Mapping[str, float], tasks: Sequence[Task], snrs: Sequence[float], prefix: str = ""
) -> dict[float, dict[str, float]]:
    """Exact per-task metrics ``{snr: {task: metric}}`` from the devices' summed statistics
    (``prefix=VAL_PREFIX``: those of the validation part)."""
    stats: dict[tuple[int, str, str], float] = {}
    for key, value in sums.items():
        if not key.startswith(prefix):
            continue
        parsed = parse_metric_key(key[len(prefix) :])
        if parsed is not None:
            stats[parsed] = as_number(value, key)
    out: dict[float, dict[str, float]] = {}
    for i, snr in enumerate(snrs):
        out[float(snr)] = {}
        for task in tasks:
            mine = {s: v for (j, t, s), v in stats.items() if j == i and t == task.name}
            if not mine:
                raise RuntimeError(f"no evaluation sums for task {task.name} at {snr:g} dB")
            out[float(snr)][task.name] = task.finalize(mine)
    return out
