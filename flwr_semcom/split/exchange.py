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

__all__ = ["ClientInfo", "SplitClientError", "exchange"]


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
    if len(messages) != len(clients):
        raise ValueError(f"{len(messages)} messages for {len(clients)} clients")
    ids = list(grid.push_messages(messages))
    if len(ids) != len(messages):
        raise RuntimeError(f"{action}: pushed {len(messages)} messages, the grid stored {len(ids)}")
    slot = {mid: i for i, mid in enumerate(ids)}
    replies: list[Message | None] = [None] * len(messages)
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
                raise SplitClientError(f"client {who} failed in {action}: {summary}")
            replies[i] = reply
        if not pending:
            break
        if time.monotonic() > deadline:
            missing = ", ".join(clients[i].describe() for i in sorted(slot[m] for m in pending))
            raise TimeoutError(
                f"{action}: no reply within strategy.timeout={timeout:g} s from {missing}"
            )
        time.sleep(poll_interval)
    return [r for r in replies if r is not None]
