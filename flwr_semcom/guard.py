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
- :func:`flwr_semcom.checkpoint.safe_load_state`, when a checkpoint is loaded (refuses NaN /
  inf with this module's check; :mod:`flwr_semcom.checkpoint` imports this module, never the
  other way round).

A failure is a :class:`NonFiniteError` whose one-line message names what was not finite
(the array and how many NaN / inf values), where (method, stage, node) and the round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from logging import WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.common.logger import log
from torch import nn

__all__ = [
    "NonFiniteError",
    "check_finite",
    "check_loss",
    "check_record_dict",
    "finite_replies",
    "nonfinite_summary",
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
