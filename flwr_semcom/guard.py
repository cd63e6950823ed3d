"""Non-finite guard: NaN / inf weights are never aggregated, installed or saved (issue #9, 4).

Self-supervised losses can explode (paper 1, Zhao et al., arXiv 2503.13940, Sec. IV, Fig. 5:
Barlow Twins "suffers from exploding gradient issues"), and a node can send garbage. Every
place where weights or activations cross a boundary checks them here:

- the server, on every received ArrayRecord, before it is aggregated or forwarded
  (:func:`finite_replies` drops a non-finite client update from a FedAvg average with a
  warning naming node and round, and fails the round when no finite update is left);
- the client, before installing received weights or gradients and before replying;
- every checkpoint / cache writer, before saving;
- every training loop, on the loss (paper 1's and SLF's loops also check gradients);
- :func:`safe_load_state`, when a checkpoint is loaded: one line naming the file and the
  first parameter whose name or shape does not match the model (a checkpoint of another
  architecture), and refusal of a checkpoint holding NaN / inf.

A failure is a :class:`NonFiniteError` whose one-line message names what was not finite
(the array and how many NaN / inf values), where (method, stage, node) and the round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from logging import WARNING
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.common.logger import log
from torch import nn

from flwr_semcom.checkpoint import CheckpointError  # one class for every checkpoint problem

__all__ = [
    "CheckpointError",
    "NonFiniteError",
    "check_finite",
    "check_loss",
    "check_record_dict",
    "finite_replies",
    "nonfinite_summary",
    "safe_load_state",
]

#: What happens after a non-finite loss or gradient in training (paper 1's wording).
TRAINING_STOPPED = "training of this method stopped (lower the learning rate or check the data)"


class NonFiniteError(FloatingPointError):
    """A loss, gradient, weight or activation holds NaN or inf.

    The message is one line: ``non-finite <what> in [method 'm', ]stage 's'[, round r];
    <consequence>``. ``method`` may be empty (a runtime check outside a paper-1 method).
    """

    def __init__(
        self,
        method: str,
        stage: str,
        round_: int | None,
        what: str,
        *,
        consequence: str = TRAINING_STOPPED,
    ) -> None:
        self.method = method
        self.stage = stage
        self.round = round_
        self.what = what
        parts = [f"method {method!r}"] if method else []
        parts.append(f"stage {stage!r}")
        if round_ is not None:
            parts.append(f"round {round_}")
        super().__init__(f"non-finite {what} in {', '.join(parts)}; {consequence}")


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    if isinstance(value, Array):
        return value.numpy()
    return np.asarray(value)


def _named(values: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Flatten tensors / arrays / records / state dicts / modules into (name, leaf) pairs."""
    if isinstance(values, nn.Module):
        yield from _named(values.state_dict(), prefix)
    elif isinstance(values, RecordDict):
        for key, rec in values.array_records.items():
            yield from _named(rec, f"{prefix}{key}/")
    elif isinstance(values, (ArrayRecord, Mapping)):
        for key, leaf in values.items():
            yield from _named(leaf, f"{prefix}{key}.")
    elif isinstance(values, (list, tuple)) and not (values and isinstance(values[0], float)):
        for i, leaf in enumerate(values):
            yield from _named(leaf, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("./") or "value", values


def nonfinite_summary(values: Any) -> str | None:
    """``None`` when every value is finite, else a description of the first bad array.

    ``values`` may be a number, a tensor, a numpy array, a Flower ``Array``/``ArrayRecord``/
    ``RecordDict`` (its ArrayRecords), a mapping (state dict), a sequence of those, or a
    module (its state dict). Integer and boolean arrays are always finite.
    """
    for name, leaf in _named(values):
        if isinstance(leaf, bool) or leaf is None:
            continue
        if isinstance(leaf, (int, float)):
            if not math.isfinite(leaf):
                return f"{name!r} ({leaf})"
            continue
        arr = _as_numpy(leaf)
        if not np.issubdtype(arr.dtype, np.inexact):
            continue
        finite = np.isfinite(arr)
        if finite.all():
            continue
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum() - n_nan)
        return f"{name!r} ({n_nan} NaN, {n_inf} inf of {arr.size} values)"
    return None


def check_finite(
    name: str,
    values: Any,
    *,
    where: str,
    round_: int | None = None,
    method: str = "",
    consequence: str = "refused",
) -> None:
    """Raise :class:`NonFiniteError` unless every value of ``values`` is finite.

    Parameters
    ----------
    name
        What the values are (``"received weights"``, ``"uplink"``, ``"checkpoint"``).
    values
        Anything :func:`nonfinite_summary` takes.
    where
        The stage / place of the check, e.g. ``"slf install at node 3"``.
    round_, method
        Named in the message when given.
    consequence
        What happens instead (``"not installed"``, ``"not saved"``, ...).
    """
    bad = nonfinite_summary(values)
    if bad is not None:
        raise NonFiniteError(method, where, round_, f"{name}: {bad}", consequence=consequence)


def check_loss(
    loss: torch.Tensor | float,
    *,
    where: str,
    step: int,
    round_: int | None = None,
    method: str = "",
) -> float:
    """The loss as a float; :class:`NonFiniteError` (training stopped) when NaN or inf."""
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if not math.isfinite(value):
        raise NonFiniteError(method, where, round_, f"loss ({value}) at step {step}")
    return value


def check_record_dict(
    content: RecordDict,
    *,
    where: str,
    round_: int | None = None,
    consequence: str = "refused",
) -> None:
    """Check every ArrayRecord of a message content (received or about to be sent)."""
    check_finite("arrays", content, where=where, round_=round_, consequence=consequence)


def finite_replies(
    replies: Sequence[Message],
    *,
    where: str,
    round_: int | None,
    key: str | None = None,
) -> list[Message]:
    """The replies whose arrays are finite; a non-finite one is dropped with a warning.

    Parameters
    ----------
    replies
        Client replies to be aggregated (error replies pass through untouched: the caller
        handles them).
    where
        Stage named in the log and the error (e.g. ``"fedavg-modality"``).
    round_
        The round named in the log and the error.
    key
        Only this ArrayRecord is checked (default: every ArrayRecord of the content).

    Raises
    ------
    NonFiniteError
        When replies carried arrays and none of them is finite (nothing left to aggregate).
    """
    kept: list[Message] = []
    dropped: list[str] = []
    for reply in replies:
        if reply.has_error():
            kept.append(reply)
            continue
        content = reply.content
        if key is not None:
            values: Any = content.array_records.get(key)
        else:
            values = content
        bad = None if values is None else nonfinite_summary(values)
        if bad is None:
            kept.append(reply)
            continue
        node = reply.metadata.src_node_id
        dropped.append(f"node {node}: {bad}")
        log(
            WARNING,
            "non-finite update from node %s in %s, round %s: %s; dropped from the average",
            node,
            where,
            round_,
            bad,
        )
    if dropped and not any(not r.has_error() for r in kept):
        raise NonFiniteError(
            "",
            where,
            round_,
            "client updates from every node (" + "; ".join(dropped) + ")",
            consequence="nothing finite to aggregate, round failed",
        )
    return kept


def safe_load_state(path: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """Load the state dict in ``path`` into ``model`` (``weights_only``; names and shapes checked).

    Parameters
    ----------
    path
        A file written with ``torch.save(model.state_dict(), ...)``.
    model
        The model to load into; it is left untouched when anything is wrong.

    Returns
    -------
    dict
        The loaded state dict.

    Raises
    ------
    CheckpointError
        One line naming the file and what is wrong: missing file, not a checkpoint, a
        parameter missing / unexpected, or a parameter of another shape (a checkpoint of
        another architecture).
    NonFiniteError
        When the checkpoint holds NaN or inf (never installed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"checkpoint {path}: not a torch state dict ({first}); delete it to retrain"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(
            f"checkpoint {path}: expected a state dict of tensors, got {type(state).__name__}"
        )
    expected = model.state_dict()
    for name, ref in expected.items():
        if name not in state:
            raise CheckpointError(
                f"checkpoint {path}: parameter {name!r} is missing (another architecture?); "
                f"expected shape {tuple(ref.shape)}"
            )
        got = state[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"checkpoint {path}: parameter {name!r} has shape {tuple(got.shape)}; the model "
                f"expects {tuple(ref.shape)} (a checkpoint of another architecture)"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(
            f"checkpoint {path}: unexpected parameter {extra[0]!r} (another architecture?); "
            f"the model has {len(expected)} entries"
        )
    check_finite("checkpoint weights", state, where=f"load {path}", consequence="not installed")
    model.load_state_dict(state)
    return dict(state)
