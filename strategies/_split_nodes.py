"""Node discovery and client checkpoints of :class:`~strategies.split_training.SplitTraining`.

- :func:`discover`: wait for the SuperNodes, ask each one (``query.split_state``) which
  partition and role it serves for the task, check that every device holds the same sample
  IDs, and count the probe in the ledger (round 0, in partition order: node IDs are random).
- :func:`fetch_states`, :func:`fetch_checkpoint`, :func:`restore`: the clients' weights and
  ``split.<task>.*`` records for tests and checkpoints (flwr_semcom/checkpoint.py); not in the
  ledger (a utility, not part of the algorithm).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from logging import ERROR, INFO, WARNING
from typing import Any

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from flwr_semcom.accounting import CommLedger
from flwr_semcom.checkpoint import (
    CheckpointError,
    load_state_strict,
    plain_to_records,
    records_to_plain,
)
from flwr_semcom.data.partition import check_alignment
from flwr_semcom.runtime.messaging import (
    ClientFailureError,
    ClientInfo,
    Messenger,
    collect,
    record_transfer,
    send,
)
from flwr_semcom.split.protocol import QUERY_CHECKPOINT, QUERY_STATE, RESTORE_STATE
from flwr_semcom.split.tasks import ServerTask

__all__ = ["SplitNodes", "discover", "fetch_checkpoint", "fetch_states", "restore", "server_state"]


def _wait_for_nodes(grid: Grid, need: int, node_wait: float) -> list[int]:
    deadline = time.monotonic() + node_wait
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < need:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(nodes)} of {need} clients connected after node_wait="
                f"{node_wait:g} s; start more SuperNodes (or num-supernodes={need})"
            )
        time.sleep(0.2)
        nodes = sorted(grid.get_node_ids())
    return nodes


def discover(
    grid: Grid,
    config: ConfigRecord,
    *,
    need: int,
    ledger: CommLedger,
    stage: str,
    poll_interval: float,
    timeout: float,
    node_wait: float,
) -> list[ClientInfo]:
    """The node of every partition ``0..need-1`` for the task of ``config``, in order."""
    task = str(config["task"])
    nodes = _wait_for_nodes(grid, need, node_wait)
    probes = [ClientInfo(n, -1, "?") for n in nodes]
    msgs = [Message(RecordDict({"config": config}), n, QUERY_STATE, group_id="0") for n in nodes]
    replies = send(  # the first message starts the client (imports, data): node_wait
        grid,
        msgs,
        probes,
        action=QUERY_STATE,
        poll_interval=poll_interval,
        timeout=max(timeout, node_wait),
    )
    by_partition: dict[int, ClientInfo] = {}
    fingerprints: dict[str, str] = {}
    for node, reply in zip(nodes, replies):
        info = reply.content.config_records["info"]
        pid = int(info["partition-id"])  # type: ignore[arg-type]
        if not 0 <= pid < need:
            log(INFO, "split: node %d (partition %d) is not used by this task", node, pid)
            continue
        error = str(info.get("error", ""))
        if error:
            raise RuntimeError(
                f"client node {node} (partition {pid}) cannot run task {task!r}: {error}"
            )
        if pid in by_partition:
            raise RuntimeError(
                f"partition {pid} is served by nodes {by_partition[pid].node_id} and {node}"
            )
        by_partition[pid] = ClientInfo(node, pid, str(info["role"]))
        if info.get("ids-fingerprint"):
            fingerprints[f"{info['role']!s}-{pid} (node {node})"] = str(info["ids-fingerprint"])
    missing = [p for p in range(need) if p not in by_partition]
    if missing:
        raise RuntimeError(
            f"no node serves partition(s) {missing}; the task needs partitions 0..{need - 1}"
        )
    clients = [by_partition[p] for p in range(need)]
    check_alignment(fingerprints)  # one line naming the devices whose sample IDs differ

    def partition_of(reply: Message) -> int:
        return int(reply.content.config_records["info"]["partition-id"])  # type: ignore[arg-type]

    for msg, reply in sorted(zip(msgs, replies), key=lambda mr: partition_of(mr[1])):
        label = f"{partition_of(reply)}:{reply.content.config_records['info']['role']!s}"
        record_transfer(ledger, "down", msg.content, stage=stage, round_=0, client=label)
        record_transfer(ledger, "up", reply.content, stage=stage, round_=0, client=label)
    log(INFO, "split: clients %s", ", ".join(c.describe() for c in clients))
    return clients


def fetch_states(
    grid: Grid,
    clients: Sequence[ClientInfo],
    config: ConfigRecord,
    *,
    poll_interval: float,
    timeout: float,
) -> dict[int, dict[str, torch.Tensor]]:
    """Every client's model ``state_dict`` by partition (``config`` has ``weights=True``)."""
    msgs = [Message(RecordDict({"config": config}), c.node_id, QUERY_STATE) for c in clients]
    replies = send(
        grid, msgs, clients, action=QUERY_STATE, poll_interval=poll_interval, timeout=timeout
    )
    return {
        c.partition_id: dict(r.content.array_records["state"].to_torch_state_dict())
        for c, r in zip(clients, replies)
    }


def fetch_checkpoint(
    grid: Grid,
    clients: Sequence[ClientInfo],
    config: ConfigRecord,
    *,
    previous: Mapping[int, Any] | None,
    server_round: int,
    poll_interval: float,
    timeout: float,
) -> dict[int, Any]:
    """Every client's ``split.<task>.*`` records as plain data, by partition. A client that does
    not answer keeps its state from ``previous`` (a skipped device), else
    :class:`ClientFailureError`."""
    msgs = [Message(RecordDict({"config": config}), c.node_id, QUERY_CHECKPOINT) for c in clients]
    replies, failures = collect(
        grid, msgs, clients, action=QUERY_CHECKPOINT, poll_interval=poll_interval, timeout=timeout
    )
    out: dict[int, Any] = {}
    for c, reply in zip(clients, replies):
        if reply is not None:
            out[c.partition_id] = records_to_plain(reply.content)
        elif previous is not None and c.partition_id in previous:
            log(
                WARNING,
                "reliability: checkpoint keeps the previous state of %s (no reply)",
                c.describe(),
            )
            out[c.partition_id] = previous[c.partition_id]
        else:
            reason = next(f.reason for f in failures if clients[f.index] == c)
            msg = (
                f"checkpoint after round {server_round}: cannot fetch the state of client "
                f"{c.describe()}: {reason}; run aborted (completed rounds are kept)"
            )
            log(ERROR, "reliability: %s", msg)
            raise ClientFailureError(msg)
    return out


def restore(
    grid: Grid,
    clients: Sequence[ClientInfo],
    config: ConfigRecord,
    states: Mapping[int, Any],
    *,
    poll_interval: float,
    timeout: float,
) -> None:
    """Send every client its checkpointed records (``train.split_restore``)."""
    msgs = []
    for c in clients:
        if c.partition_id not in states:
            raise CheckpointError(f"checkpoint has no state for partition {c.partition_id}")
        content = plain_to_records(states[c.partition_id])
        content["config"] = config
        msgs.append(Message(content, c.node_id, RESTORE_STATE))
    send(grid, msgs, clients, action=RESTORE_STATE, poll_interval=poll_interval, timeout=timeout)


def server_state(strategy: Any) -> dict[str, torch.Tensor]:
    """A detached copy of a split strategy's server model ``state_dict``."""
    return {k: v.detach().cpu().clone() for k, v in strategy.server.model.state_dict().items()}


class SplitNodes:
    """The node and checkpoint methods of :class:`~strategies.split_training.SplitTraining`
    (it provides the attributes annotated here)."""

    server: ServerTask
    clients: list[ClientInfo]
    history: list[dict[str, Any]]
    messenger: Messenger
    stage: str
    poll_interval: float
    node_wait: float

    @property
    def ledger(self) -> CommLedger:
        """Where every transfer of this strategy is recorded."""
        return self.messenger.ledger

    @ledger.setter
    def ledger(self, ledger: CommLedger) -> None:
        self.messenger.ledger = ledger

    @property
    def timeout(self) -> float:
        """Seconds to wait for a reply."""
        return self.messenger.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self.messenger.timeout = float(value)

    def _config(self, server_round: int, **extra: Any) -> ConfigRecord:
        raise NotImplementedError

    def discover(self, grid: Grid) -> list[ClientInfo]:
        """Find the node of every partition ``0..num_clients-1`` (``query.split_state``)."""
        self.clients = discover(
            grid,
            self._config(0),
            need=self.server.num_clients,
            ledger=self.ledger,
            stage=self.stage,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            node_wait=self.node_wait,
        )
        return self.clients

    def fetch_client_states(self, grid: Grid) -> dict[int, dict[str, torch.Tensor]]:
        """Every client's model ``state_dict`` by partition (not in the ledger)."""
        return fetch_states(
            grid,
            self.clients,
            self._config(0, weights=True),
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )

    def fetch_client_checkpoint(
        self, grid: Grid, previous: dict[int, Any] | None = None, server_round: int = 0
    ) -> dict[int, Any]:
        """Every client's ``split.<task>.*`` records as plain data, by partition (a silent
        client keeps its state from ``previous``; not in the ledger)."""
        return fetch_checkpoint(
            grid,
            self.clients,
            self._config(0),
            previous=previous,
            server_round=server_round,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )

    def restore_clients(self, grid: Grid, states: dict[int, Any]) -> None:
        """Send every client its checkpointed records (``train.split_restore``)."""
        restore(
            grid,
            self.clients,
            self._config(0),
            states,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )

    def state_dict(self) -> dict[str, Any]:
        """Server model, optimizer and the round history (plain data for a checkpoint)."""
        return {
            "model": server_state(self),
            "optimizer": self.server.optimizer.state_dict(),
            "history": [dict(r) for r in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a model of another shape → one-line CheckpointError."""
        load_state_strict(self.server.model, state["model"], "server model")
        try:
            self.server.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint server optimizer does not fit: {err}") from None
        self.history = [dict(r) for r in state["history"]]
