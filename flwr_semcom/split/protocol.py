"""Wire format of the split-learning exchange: message types, records, plans, sizes.

One training action carries everything a client needs for one exchange (docs/split.md):

``train.split_step`` (server → client)
    ``"config"`` :class:`ConfigRecord` — ``experiment``, ``overrides`` (the client composes
    the hydra config from them), ``task``, ``stage``, ``round``, ``exchange``, ``profile``;
    ``"grads"`` :class:`ArrayRecord` — ∂L/∂(uplink) for the batches of the previous exchange,
    one array per uplink name, batches concatenated along dim 0 (absent on the first exchange
    of a pass); ``"plan"`` :class:`ArrayRecord` — the next batches (absent on the last).
reply (client → server)
    ``"uplink"`` :class:`ArrayRecord` — one array per uplink name (e.g. ``z_hat``), the planned
    batches concatenated along dim 0 (absent when the message had no plan); ``"timing"``
    :class:`MetricRecord` — only with ``profile``.

``evaluate.split_forward`` carries ``"config"`` and ``"plan"`` and returns ``"uplink"``
(eval mode, no gradients, no state change). ``query.split_state`` carries ``"config"`` and
returns ``"info"`` (partition, role) and, when ``config["weights"]`` is true, ``"state"``
(the client model's ``state_dict``).

Checkpoints (flwr_semcom/checkpoint.py): ``query.split_checkpoint`` returns every record the
client keeps under ``split.<task>.`` (model, optimizer, pending plan, meta), named by part;
``train.split_restore`` carries such records and replaces the client's ``split.<task>.*``.

A plan record holds four int64 arrays: ``ids`` (all sample IDs, batches concatenated),
``sizes`` ``[S]``, ``aug_seeds`` ``[S]``, ``noise_seeds`` ``[S]`` and ``index`` ``[S]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from flwr_semcom.split.schedule import BatchPlan

__all__ = [
    "EVAL_FORWARD",
    "MESSAGE_TYPES",
    "QUERY_CHECKPOINT",
    "QUERY_STATE",
    "RESTORE_STATE",
    "TRAIN_STEP",
    "decode_plan",
    "encode_plan",
    "pack_tensors",
    "record_nbytes",
    "to_tensor",
    "unpack_tensors",
]

TRAIN_STEP = "train.split_step"
EVAL_FORWARD = "evaluate.split_forward"
QUERY_STATE = "query.split_state"
QUERY_CHECKPOINT = "query.split_checkpoint"
RESTORE_STATE = "train.split_restore"
MESSAGE_TYPES = (TRAIN_STEP, EVAL_FORWARD, QUERY_STATE, QUERY_CHECKPOINT, RESTORE_STATE)

_PLAN_KEYS = ("ids", "sizes", "aug_seeds", "noise_seeds", "index")


def to_tensor(array: Array) -> torch.Tensor:
    """A writable torch tensor from a Flower ``Array``."""
    return torch.from_numpy(np.array(array.numpy(), copy=True))


def encode_plan(batches: Sequence[BatchPlan]) -> ArrayRecord:
    """Encode batch plans as an :class:`ArrayRecord` of int64 arrays."""
    if not batches:
        raise ValueError("a plan needs at least one batch")
    rec = ArrayRecord()
    rec["ids"] = Array(torch.cat([b.ids for b in batches]).to(torch.int64).numpy())
    rec["sizes"] = Array(np.array([b.size for b in batches], dtype=np.int64))
    rec["aug_seeds"] = Array(np.array([b.aug_seed for b in batches], dtype=np.int64))
    rec["noise_seeds"] = Array(np.array([b.noise_seed for b in batches], dtype=np.int64))
    rec["index"] = Array(np.array([b.index for b in batches], dtype=np.int64))
    return rec


def decode_plan(record: ArrayRecord) -> list[BatchPlan]:
    """Decode :func:`encode_plan`'s record; raise ``ValueError`` on a malformed plan."""
    missing = [k for k in _PLAN_KEYS if k not in record]
    if missing:
        raise ValueError(f"plan record lacks {', '.join(missing)}; expected keys {_PLAN_KEYS}")
    ids = to_tensor(record["ids"]).to(torch.int64).reshape(-1)
    sizes = to_tensor(record["sizes"]).tolist()
    aug = to_tensor(record["aug_seeds"]).tolist()
    noise = to_tensor(record["noise_seeds"]).tolist()
    index = to_tensor(record["index"]).tolist()
    if not (len(sizes) == len(aug) == len(noise) == len(index)) or not sizes:
        raise ValueError(
            "plan record: sizes, aug_seeds, noise_seeds and index must have the same length >= 1"
        )
    if any(s < 1 for s in sizes) or sum(sizes) != ids.shape[0]:
        raise ValueError(
            f"plan record: batch sizes {sizes} do not add up to the {ids.shape[0]} sample IDs"
        )
    out: list[BatchPlan] = []
    start = 0
    for s, a, n, i in zip(sizes, aug, noise, index):
        out.append(BatchPlan(int(i), ids[start : start + s].clone(), int(a), int(n)))
        start += s
    return out


def pack_tensors(per_batch: Sequence[Mapping[str, torch.Tensor]]) -> ArrayRecord:
    """Concatenate per-batch tensors (same names in every batch) along dim 0, per name."""
    if not per_batch:
        raise ValueError("nothing to pack: no batches")
    names = list(per_batch[0])
    rec = ArrayRecord()
    for name in names:
        parts = [b[name].detach() for b in per_batch]
        rec[name] = Array(torch.cat(parts).cpu().contiguous())
    return rec


def unpack_tensors(
    record: ArrayRecord, sizes: Sequence[int], what: str = "uplink"
) -> list[dict[str, torch.Tensor]]:
    """Split each array of ``record`` along dim 0 into batches of ``sizes``."""
    out: list[dict[str, torch.Tensor]] = [{} for _ in sizes]
    total = int(sum(sizes))
    for name in record:
        t = to_tensor(record[name])
        if t.shape[0] != total:
            raise ValueError(
                f"{what} {name!r}: {t.shape[0]} rows, expected {total} (batches {list(sizes)})"
            )
        for i, part in enumerate(torch.split(t, list(sizes))):
            out[i][name] = part
    return out


def _config_value_nbytes(value: object) -> int:
    if isinstance(value, (list, tuple)):
        return sum(_config_value_nbytes(v) for v in value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 8
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes):
        return len(value)
    raise TypeError(f"unsupported record value {type(value).__name__}")


def record_nbytes(record: ArrayRecord | ConfigRecord | MetricRecord) -> int:
    """Payload bytes of a record, as the ledger counts them.

    Arrays: ``numel × itemsize``. Config/metric values: 8 bytes per int or float, 1 per
    bool, the UTF-8 length of a string, the length of bytes. Key names and Flower's framing
    are not counted (both ends know the schema).
    """
    if isinstance(record, ArrayRecord):
        total = 0
        for arr in record.values():
            numel = int(np.prod(arr.shape)) if arr.shape else 1
            total += numel * np.dtype(arr.dtype).itemsize
        return total
    return sum(_config_value_nbytes(v) for v in record.values())


def content_nbytes(content: RecordDict, names: Sequence[str]) -> int:
    """Bytes of the records ``names`` present in ``content`` (missing names count 0)."""
    return sum(record_nbytes(content[n]) for n in names if n in content)
