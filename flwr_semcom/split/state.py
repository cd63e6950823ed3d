"""Model and optimizer state ↔ Flower records (what a client keeps in ``context.state``).

A client process may serve several virtual nodes (simulation) or live for one message only
(deployment), so weights and optimizer state are stored in ``context.state`` after every
message and restored before the next (../shared/FLOWER_NOTES.md §3). Tensors go into an
:class:`ArrayRecord`; the optimizer's non-tensor parts (``param_groups``, scalar state such
as a ``None`` momentum buffer) into a :class:`ConfigRecord` as JSON.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord
from torch import nn

from flwr_semcom.split.protocol import to_tensor

__all__ = ["load_module", "load_optimizer", "module_record", "optimizer_records"]


def module_record(module: nn.Module) -> ArrayRecord:
    """The module's ``state_dict`` (parameters and buffers) as an :class:`ArrayRecord`."""
    rec = ArrayRecord()
    for name, tensor in module.state_dict().items():
        rec[name] = Array(tensor.detach().cpu().contiguous())
    return rec


def load_module(module: nn.Module, record: ArrayRecord) -> None:
    """Load :func:`module_record`'s record into ``module`` (strict: keys must match)."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    state = {k: to_tensor(v).to(device) for k, v in record.items()}
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
