"""Wire format of the split-learning exchange: message types, records, plans, sizes.

One training action carries everything a client needs for one exchange (docs/split.md):

``train.split_step`` (server → client)
    ``"config"`` :class:`ConfigRecord` — the reserved keys :data:`RESERVED` (``task``,
    ``stage``, ``round``, ``exchange``, ``profile``; ``weights`` for ``query.split_state``;
    ``attempt`` on a re-send; ``fresh`` for ``train.split_set_model``, and on exchange 0 of
    a round > 1 to a client the server never trained (a client without state refuses
    exchange 0 of a later round otherwise); ``persist``: write the
    node's full state into ``context.state`` after this step, docs/split.md "Warm client
    state") and the *task
    parameters*: every other key, a plain value (str, int, float, bool) handed to the task
    factory on the node (e.g. ``method="decur"``; :class:`MessageSpec`). Nothing else: the
    node builds its task from these and its own ``Context``;
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
``train.split_set_model`` carries ``"weights"`` (a full model ``state_dict``) and stores it as
the task's weights (with ``config["fresh"]``: also forgets optimizer and exchange state).

A plan record holds four int64 arrays: ``ids`` (all sample IDs, batches concatenated),
``sizes`` ``[S]``, ``aug_seeds`` ``[S]``, ``noise_seeds`` ``[S]`` and ``index`` ``[S]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message

from flwr_semcom.accounting import record_nbytes
from flwr_semcom.split.schedule import BatchPlan

__all__ = [
    "EVAL_FORWARD",
    "MESSAGE_TYPES",
    "QUERY_CHECKPOINT",
    "QUERY_STATE",
    "RESERVED",
    "RESTORE_STATE",
    "SET_MODEL",
    "TRAIN_STEP",
    "MessageSpec",
    "config_record",
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
SET_MODEL = "train.split_set_model"
MESSAGE_TYPES = (TRAIN_STEP, EVAL_FORWARD, QUERY_STATE, QUERY_CHECKPOINT, RESTORE_STATE, SET_MODEL)

#: Keys of the ``"config"`` record that belong to the runtime; every other key is a task
#: parameter.
RESERVED = (
    "task",
    "stage",
    "round",
    "exchange",
    "profile",
    "weights",
    "attempt",
    "fresh",
    "persist",
    "schedule",
    "compensation",
)
_PARAM_TYPES = (str, int, float, bool)


def config_record(
    task: str, params: Mapping[str, Any] | None = None, **values: Any
) -> ConfigRecord:
    """The ``"config"`` record of a split message: ``task``, the runtime ``values`` (reserved
    keys) and the task ``params``; ``ValueError`` for a param that uses a reserved key or is
    not a str / int / float / bool."""
    rec: dict[str, Any] = {"task": task}
    for key, value in (params or {}).items():
        if key in RESERVED:
            raise ValueError(f"task parameter {key!r} uses a reserved key; reserved: {RESERVED}")
        if not isinstance(value, _PARAM_TYPES):
            raise ValueError(
                f"task parameter {key!r}: {type(value).__name__} is not str, int, float or bool"
            )
    unknown = sorted(set(values) - set(RESERVED))
    if unknown:
        raise ValueError(f"config record: {unknown} are not runtime keys; valid: {RESERVED}")
    rec.update(params or {})
    rec.update(values)
    return ConfigRecord(rec)


@dataclass(frozen=True)
class MessageSpec:
    """The decoded ``"config"`` record of a split message."""

    task: str
    stage: str = ""
    round: int = 0
    exchange: int = 0
    profile: bool = False
    weights: bool = False
    attempt: int = 0
    fresh: bool = False
    persist: bool = False
    schedule: str = "exact"
    compensation: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def params_key(self) -> tuple[tuple[str, Any], ...]:
        """The task parameters as a hashable, ordered key."""
        return tuple(sorted(self.params.items()))

    @classmethod
    def from_message(cls, msg: Message, action: str) -> MessageSpec:
        """Decode a message's ``"config"`` record; ``ValueError`` naming the action if bad."""
        if "config" not in msg.content:
            raise ValueError(f"{action}: the message has no 'config' record")
        rec = msg.content.config_records["config"]
        if not isinstance(rec.get("task"), str) or not rec["task"]:
            raise ValueError(f"{action}: config record needs a non-empty string 'task'")
        try:
            return cls(
                task=str(rec["task"]),
                stage=str(rec.get("stage", "")),
                round=int(rec.get("round", 0)),  # type: ignore[arg-type]
                exchange=int(rec.get("exchange", 0)),  # type: ignore[arg-type]
                profile=bool(rec.get("profile", False)),
                weights=bool(rec.get("weights", False)),
                attempt=int(rec.get("attempt", 0)),  # type: ignore[arg-type]
                fresh=bool(rec.get("fresh", False)),
                persist=bool(rec.get("persist", False)),
                schedule=str(rec.get("schedule", "exact")),
                compensation=float(rec.get("compensation", 0.0)),  # type: ignore[arg-type]
                params={k: v for k, v in rec.items() if k not in RESERVED},
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{action}: malformed config record ({err})") from None


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
