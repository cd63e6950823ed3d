"""Who a client is and how it failed: :class:`ClientInfo`, the client errors the messaging
layer raises (:mod:`flwr_semcom.runtime.messaging`) and :class:`Failure`. Standard library
only, like :mod:`.relay`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ClientError",
    "ClientFailureError",
    "ClientInfo",
    "ClientTimeoutError",
    "Failure",
    "reason_summary",
]


@dataclass(frozen=True)
class ClientInfo:
    """A connected client: its Flower node ID, partition ID and role (e.g. modality)."""

    node_id: int
    partition_id: int
    role: str

    def describe(self) -> str:
        return f"node {self.node_id} (partition {self.partition_id}, {self.role})"

    @property
    def label(self) -> str:
        """The ledger's client column: ``"<partition>:<role>"`` (node IDs are random)."""
        return f"{self.partition_id}:{self.role}"


class ClientError(RuntimeError):
    """A client answered a message with an error."""


class ClientFailureError(ClientError):
    """A client failed and the failure policy stops the run (one line)."""


class ClientTimeoutError(ClientFailureError, TimeoutError):
    """A client did not answer within the timeout and the policy stops the run."""


@dataclass(frozen=True)
class Failure:
    """Why a client gave no usable reply: ``kind`` is ``"error"`` or ``"timeout"``."""

    index: int
    kind: str
    reason: str


def reason_summary(reason: str) -> str:
    """The most telling line of an error reason (simulation sends a whole traceback)."""
    lines = [ln.strip() for ln in reason.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line
    return lines[-1] if lines else "(no reason given)"
