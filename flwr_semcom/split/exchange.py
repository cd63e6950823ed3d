"""Push messages to every client at once and pull the replies with a short poll interval.

``Grid.send_and_receive`` sleeps ``pull_interval`` (0.1 s in simulation, 3 s in deployment)
between pulls (../shared/FLOWER_NOTES.md §4). :func:`exchange` pushes all messages of one
exchange (all clients work in parallel where the engine allows), then pulls every
``poll_interval`` seconds until each client has answered. An error reply is logged with the
client's node ID, partition and role and the action, then raised as :class:`SplitClientError`;
a missing reply after ``timeout`` seconds raises :class:`TimeoutError` naming the clients.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from logging import DEBUG, ERROR

from flwr.app import Message
from flwr.common.logger import log
from flwr.serverapp import Grid

__all__ = ["ClientInfo", "Failure", "SplitClientError", "collect", "exchange"]


@dataclass(frozen=True)
class ClientInfo:
    """A connected client: its Flower node ID, partition ID and role (e.g. modality)."""

    node_id: int
    partition_id: int
    role: str

    def describe(self) -> str:
        return f"node {self.node_id} (partition {self.partition_id}, {self.role})"


class SplitClientError(RuntimeError):
    """A client answered a split-learning message with an error."""


def _reason_summary(reason: str) -> str:
    """The most telling line of an error reason (simulation sends a whole traceback)."""
    lines = [ln.strip() for ln in reason.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line
    return lines[-1] if lines else "(no reason given)"


@dataclass(frozen=True)
class Failure:
    """Why a client gave no usable reply: ``kind`` is ``"error"`` or ``"timeout"``."""

    index: int
    kind: str
    reason: str


def collect(
    grid: Grid,
    messages: Sequence[Message],
    clients: Sequence[ClientInfo],
    *,
    action: str,
    poll_interval: float,
    timeout: float,
    stop_on_error: bool = False,
) -> tuple[list[Message | None], list[Failure]]:
    """Send ``messages[i]`` to ``clients[i]``; return the replies (None where a client failed)
    and the failures (error replies and clients silent for ``timeout`` seconds), raising
    nothing. Error replies are logged with the client, the action and the reason's summary.
    With ``stop_on_error`` it returns at the first error reply (other replies may be missing).
    """
    if len(messages) != len(clients):
        raise ValueError(f"{len(messages)} messages for {len(clients)} clients")
    ids = list(grid.push_messages(messages))
    if len(ids) != len(messages):
        raise RuntimeError(f"{action}: pushed {len(messages)} messages, the grid stored {len(ids)}")
    slot = {mid: i for i, mid in enumerate(ids)}
    replies: list[Message | None] = [None] * len(messages)
    failures: list[Failure] = []
    pending = set(ids)
    deadline = time.monotonic() + timeout
    while pending:
        for reply in grid.pull_messages(list(pending)):
            mid = reply.metadata.reply_to_message_id
            if mid not in slot:
                continue
            i = slot[mid]
            pending.discard(mid)
            if reply.has_error():
                who = clients[i].describe()
                summary = _reason_summary(reply.error.reason or "")
                log(ERROR, "split: client %s failed in %s: %s", who, action, summary)
                log(DEBUG, "split: full error reason from %s: %s", who, reply.error.reason)
                failures.append(Failure(i, "error", summary))
                continue
            replies[i] = reply
        if not pending or (stop_on_error and failures):
            break
        if time.monotonic() > deadline:
            for i in sorted(slot[m] for m in pending):
                failures.append(
                    Failure(i, "timeout", f"no reply within strategy.timeout={timeout:g} s")
                )
            break
        time.sleep(poll_interval)
    failures.sort(key=lambda f: f.index)
    return replies, failures


def exchange(
    grid: Grid,
    messages: Sequence[Message],
    clients: Sequence[ClientInfo],
    *,
    action: str,
    poll_interval: float,
    timeout: float,
) -> list[Message]:
    """Send ``messages[i]`` to ``clients[i]`` and return the replies in the same order.

    Raises
    ------
    SplitClientError
        If a client replied with an error (logged first, naming the client and the action).
    TimeoutError
        If some client did not reply within ``timeout`` seconds.
    """
    replies, failures = collect(
        grid,
        messages,
        clients,
        action=action,
        poll_interval=poll_interval,
        timeout=timeout,
        stop_on_error=True,
    )
    errors = [f for f in failures if f.kind == "error"]
    if errors:
        who = clients[errors[0].index].describe()
        raise SplitClientError(f"client {who} failed in {action}: {errors[0].reason}")
    if failures:
        missing = ", ".join(clients[f.index].describe() for f in failures)
        raise TimeoutError(
            f"{action}: no reply within strategy.timeout={timeout:g} s from {missing}"
        )
    return [r for r in replies if r is not None]
