"""Model and optimizer state ↔ Flower records (what a client keeps in ``context.state``).

A client process may serve several virtual nodes (simulation) or live for one message only
(deployment), so weights and optimizer state are stored in ``context.state`` after every
message and restored before the next (../shared/FLOWER_NOTES.md §3; a per-node worker keeps
them live between persist points instead, :mod:`flwr_semcom.split.live`). Tensors go into an
:class:`ArrayRecord`; the optimizer's non-tensor parts (``param_groups``, scalar state such
as a ``None`` momentum buffer) into a :class:`ConfigRecord` as JSON.

A task's entries are ``split.<task>.<part>`` (parts :data:`PARTS`); other code reads and
writes them only through :func:`task_model`, :func:`set_task_model` and :func:`clear_tasks`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from torch import nn

from flwr_semcom.split.protocol import to_tensor

__all__ = [
    "PARTS",
    "clear_tasks",
    "load_module",
    "load_optimizer",
    "module_record",
    "optimizer_records",
    "restamp",
    "set_task_model",
    "state_key",
    "task_model",
]

#: What the runtime keeps per task: weights, optimizer (tensors, JSON), the last exchange,
#: and the plan and buffers of the batches whose gradients are pending.
PARTS = ("model", "optim", "optim_meta", "meta", "pending", "pending_buffers")
_PREFIX = "split."


def state_key(task: str, part: str) -> str:
    """The ``context.state`` key of ``part`` of ``task`` (``split.<task>.<part>``)."""
    return f"{_PREFIX}{task}.{part}"


def task_model(state: RecordDict, task: str) -> ArrayRecord | None:
    """The stored weights of ``task`` on this node, or ``None`` (never trained here)."""
    key = state_key(task, "model")
    return state.array_records[key] if key in state else None


def set_task_model(
    state: RecordDict, task: str, model: ArrayRecord, *, fresh: bool = False
) -> None:
    """Store ``model`` (a full ``state_dict`` record) as the weights of ``task``.

    With ``fresh`` the task's optimizer state, exchange position and pending plan are
    deleted too, so the next ``train.split_step`` (exchange 0) starts from these weights.
    """
    if fresh:
        for part in PARTS:
            key = state_key(task, part)
            if key in state:
                del state[key]
    state[state_key(task, "model")] = model
    restamp(state, task)


def restamp(state: RecordDict, task: str) -> None:
    """Give the stamp of ``task``'s meta (warm state, :mod:`flwr_semcom.split.live`) a new
    value after its records were rewritten, so that no live copy of the old ones is used;
    the records stay marked complete if they were. No-op for a meta without a stamp."""
    key = state_key(task, "meta")
    if key not in state or not str(state.config_records[key].get("stamp", "")):
        return
    meta = state.config_records[key]
    complete = str(meta.get("saved", "")) == str(meta["stamp"])
    meta["stamp"] = uuid.uuid4().hex
    meta["saved"] = meta["stamp"] if complete else ""


def clear_tasks(state: RecordDict) -> int:
    """Delete every split-task entry of ``state``; return how many were deleted."""
    doomed = [k for k in list(state.keys()) if k.startswith(_PREFIX)]
    for key in doomed:
        del state[key]
    return len(doomed)


def module_record(module: nn.Module) -> ArrayRecord:
    """The module's ``state_dict`` (parameters and buffers): ``ArrayRecord(state_dict)``."""
    return ArrayRecord(module.state_dict())  # type: ignore[arg-type]


def load_module(module: nn.Module, record: ArrayRecord) -> None:
    """Load :func:`module_record`'s record into ``module`` (strict: keys must match)."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    state = {k: v.to(device) for k, v in record.to_torch_state_dict().items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"stored client state does not fit the model: {first}") from None


def optimizer_records(optimizer: torch.optim.Optimizer) -> tuple[ArrayRecord, ConfigRecord]:
    """The optimizer's state: tensors (``"<param index>.<key>"``) and JSON for the rest."""
    sd = optimizer.state_dict()
    arrays = ArrayRecord()
    scalars: dict[str, Any] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                arrays[f"{idx}.{key}"] = Array(value.detach().cpu().contiguous())
            else:
                scalars[f"{idx}.{key}"] = value
    meta = ConfigRecord(
        {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}
    )
    return arrays, meta


def load_optimizer(
    optimizer: torch.optim.Optimizer, arrays: ArrayRecord, meta: ConfigRecord
) -> None:
    """Restore what :func:`optimizer_records` saved into a freshly built ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    device = optimizer.param_groups[0]["params"][0].device
    for name, arr in arrays.items():
        idx, _, key = name.partition(".")
        state.setdefault(int(idx), {})[key] = to_tensor(arr).to(device)
    for name, value in json.loads(str(meta["scalars"])).items():
        idx, _, key = name.partition(".")
        state.setdefault(int(idx), {})[key] = value
    groups = json.loads(str(meta["param_groups"]))
    optimizer.load_state_dict({"state": state, "param_groups": groups})
