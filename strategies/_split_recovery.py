"""Delivery of split exchanges and recovery of a device that failed (issue #17, item 3).

:class:`SplitRecovery` gives :class:`~strategies.split_training.SplitTraining` its
``_deliver`` (one exchange under the failure policy) and its client checkpoints
(docs/reliability.md, "Failure policies in deployment").

Under ``reliability.on_failure=wait`` a device that fails mid-round (an error reply, the
SuperLink's ``Node Unavailable`` for a dead SuperNode, or no reply within
``strategy.timeout``) is brought back to where the server left it before the failed message
is sent again (at most ``reliability.retries`` times per message):

1. **wait** until its node is listed again (``grid.get_node_ids()``: the online nodes of a
   deployment), polling after 0.5, 1, 2, 4, … s (at most 15 s), one INFO line per poll, for
   at most ``strategy.timeout`` s; a node ID not seen before is asked for its partition
   (``query.split_state``) and, if it serves the lost one, takes its place (a SuperNode
   restarted with another key);
2. **ask** where it is (``query.split_state``: the round and exchange of its split state);
   if that is not where the server left it (a restarted SuperNode has lost ``context.state``;
   or this message failed before), **restore** its state of the round start
   (``train.split_restore``: the clients' checkpoint after the previous round, fetched by the
   runner or, if it fetched none, by this class at the round start) and **replay** the
   round's earlier exchanges to it: the same messages, on which the client recomputes from the
   plans and seeds, so its state is the one it lost (each replayed uplink is checked against a
   digest of the original reply);
3. **re-send** the failed message (``attempt`` k in its config).

Only the lost device is rewound and replayed; the server model and the other devices are
untouched, so the run's metrics are those of an uninterrupted run. The recovery messages are
counted in the ledger (bytes; rows of the round).

For every policy: exchange 0 of a round > 1 carries ``fresh`` to a client the server never
trained, and any other client without split state refuses exchange 0 of a later round
(:func:`flwr_semcom.split.client.split_step`): a restarted device is never re-initialised
silently (under ``skip`` it is skipped and marked). A client that answers the checkpoint query
without state keeps its previous state in the checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from logging import ERROR, INFO, WARNING
from typing import Any, NoReturn

from flwr.app import Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from flwr_semcom.checkpoint import plain_to_records
from flwr_semcom.reliability import FailurePolicy
from flwr_semcom.runtime.messaging import (
    ClientFailureError,
    ClientInfo,
    ClientTimeoutError,
    collect,
    record_transfer,
)
from flwr_semcom.split.protocol import QUERY_CHECKPOINT, QUERY_STATE, RESTORE_STATE
from strategies._split_nodes import SplitNodes, fetch_checkpoint
from strategies._split_plan import EvalPlan, PassPlan
from strategies._split_uplinks import Uplinks, copy_message, deliver, uplink_digest

__all__ = ["SplitRecovery"]

#: Pauses between polls for a lost node: the first, the growth factor and the longest.
BACKOFF = (0.5, 2.0, 15.0)


class _NotBackError(Exception):
    """The lost client did not answer a recovery message (yet)."""


def _say(level: int, text: str) -> None:
    log(level, "reliability: %s", text)


def _fail(text: str, error: type[ClientFailureError] = ClientFailureError) -> NoReturn:
    """Log the one ERROR line of a run that cannot go on, and raise it."""
    _say(ERROR, text)
    raise error(text)


@dataclass
class _Recovery:
    """What the server knows about its clients' split state."""

    #: the clients' records (plain) of the last checkpoint, by partition, and the round after
    #: which they were taken (``None``: restored, valid for the next round)
    states: dict[int, Any] | None = None
    states_round: int | None = None
    #: partitions whose client holds split state (trained or restored)
    trained: set[int] = field(default_factory=set)
    round: int = 0
    #: the clients' records at the start of ``round`` (under wait)
    start: dict[int, Any] = field(default_factory=dict)
    #: per client index, the train.split_step messages of ``round`` it answered, with the
    #: digest of its uplink (under wait: what a replay sends again)
    sent: dict[int, list[tuple[Message, str]]] = field(default_factory=dict)
    #: node IDs that answered for no lost partition
    strangers: set[int] = field(default_factory=set)


class SplitRecovery(SplitNodes):
    """``_deliver`` and client checkpoints of :class:`~strategies.split_training.SplitTraining`
    (it provides the attributes annotated here)."""

    policy: FailurePolicy
    skipped: dict[int, str]
    _pass: PassPlan | None
    _eval: EvalPlan | None
    _uplinks: Uplinks

    @property
    def _rec(self) -> _Recovery:
        rec = self.__dict__.get("_recovery")
        if rec is None:
            rec = self.__dict__["_recovery"] = _Recovery()
        return rec  # type: ignore[no-any-return]

    def _remember(self, states: dict[int, Any], after_round: int | None) -> None:
        rec = self._rec
        rec.states, rec.states_round = states, after_round
        rec.trained |= {p for p, s in states.items() if "meta" in s}

    # ------------------------------------------------------------------ checkpoints
    def fetch_client_checkpoint(
        self, grid: Grid, previous: dict[int, Any] | None = None, server_round: int = 0
    ) -> dict[int, Any]:
        """Every client's ``split.<task>.*`` records as plain data, by partition; a client
        that does not answer, or answers without state while it had some (a restarted
        node), keeps its state from ``previous`` (not in the ledger)."""
        previous = previous if previous is not None else self._rec.states
        states = super().fetch_client_checkpoint(grid, previous, server_round)
        wait = self.policy.on_failure == "wait" and server_round == self._rec.round > 0
        for c, info in enumerate(self.clients):
            p = info.partition_id
            lost = "meta" not in states.get(p, {}) and "meta" in (previous or {}).get(p, {})
            silent = previous is not None and p in previous and states.get(p) is previous[p]
            if wait and (lost or silent):  # bring it to the end of the round, ask again
                where = f"{QUERY_CHECKPOINT}, round {server_round}, checkpoint"
                info = self._recover(grid, c, "", where, force=False)
                states[p] = fetch_checkpoint(
                    grid, [info], self._config(0), previous=None, server_round=server_round,
                    poll_interval=self.poll_interval, timeout=self.timeout,
                )[p]  # fmt: skip
            elif lost:
                _say(WARNING, f"client {info.describe()} has no split state (restarted?); the "
                     f"checkpoint after round {server_round} keeps its previous state")  # fmt: skip
                states[p] = previous[p]  # type: ignore[index]
        self._remember(states, server_round)
        return states

    def restore_clients(self, grid: Grid, states: dict[int, Any]) -> None:
        """Send every client its checkpointed records (``train.split_restore``)."""
        super().restore_clients(grid, states)
        self._remember(states, None)

    # ------------------------------------------------------------------ delivery
    def _deliver(
        self, grid: Grid, msgs: Sequence[Message], stage: str, server_round: int, where: str
    ) -> list[Message | None]:
        """One exchange (messages in client order, none for skipped clients) under the
        failure policy; the replies in client order, ``None`` for skipped clients."""
        p, e = self._pass, self._eval
        train = stage != "eval"
        if not train and e is not None:
            sizes = [b.size for b in e.chunks[e.chunk]]
        elif p is not None and p.exchange < len(p.groups):
            sizes = [b.size for b in p.groups[p.exchange]]
        else:
            sizes = []
        targets = [c for c in range(len(self.clients)) if c not in self.skipped]
        msgs = list(msgs)
        if train and p is not None and p.exchange == 0:
            self._begin_round(grid, server_round)
            fresh = [c for c in targets if self.clients[c].partition_id not in self._rec.trained]
            if server_round > 1:  # a client without state accepts round 1 only, or `fresh`
                for i, c in enumerate(targets):
                    if c in fresh:
                        msgs[i] = copy_message(msgs[i], msgs[i].metadata.dst_node_id, fresh=True)
        if self.policy.on_failure != "wait":
            replies = deliver(
                self.messenger, grid, self.clients, self.skipped, msgs, self._uplinks.uses,
                sizes, stage=stage, round_=server_round, where=where,
            )  # fmt: skip
        else:
            replies, msgs = self._deliver_waiting(grid, msgs, stage, server_round, where, sizes)
            for c, (msg, reply) in enumerate(zip(msgs, replies)):
                if train and reply is not None:  # every reply is in: wait never skips
                    self._rec.sent.setdefault(c, []).append((msg, uplink_digest(reply)))
        if train:
            self._rec.trained |= {
                self.clients[c].partition_id for c, r in enumerate(replies) if r is not None
            }
        return replies

    def _begin_round(self, grid: Grid, server_round: int) -> None:
        """Under wait: the clients' records at the start of the round (the last checkpoint
        if it was taken after the previous round, else fetched now)."""
        rec = self._rec
        rec.round, rec.sent = server_round, {}
        if self.policy.on_failure != "wait":
            return
        if rec.states is None or rec.states_round not in (None, server_round - 1):
            self.fetch_client_checkpoint(grid, rec.states, server_round - 1)
        rec.start = dict(rec.states or {})
        rec.states_round = server_round - 1

    def _deliver_waiting(
        self, grid: Grid, msgs: list[Message], stage: str, round_: int, where: str, sizes: list[int]
    ) -> tuple[list[Message | None], list[Message]]:
        """Every client's reply to ``msgs[c]`` (one per client), recovering failed clients
        before each re-send; the replies and the messages that got them."""
        for c, msg in enumerate(msgs):
            self._record("down", msg, self.clients[c], stage, round_)
        out: list[Message | None] = [None] * len(msgs)
        final = list(msgs)
        todo = list(range(len(msgs)))
        action = msgs[0].metadata.message_type if msgs else ""
        context = f"{action}, round {round_}, {where}"
        attempt = 0
        while todo:
            replies, failures = collect(
                grid, [final[c] for c in todo], [self.clients[c] for c in todo], action=action,
                poll_interval=self.poll_interval, timeout=self.timeout,
            )  # fmt: skip
            for c, reply in zip(todo, replies):
                out[c] = reply
            if not failures:
                break
            if attempt >= self.policy.retries:
                f = failures[0]
                self._abort(self.clients[todo[f.index]], f.kind, f.reason, context, attempt)
            attempt += 1
            again = []
            for f in failures:
                c = todo[f.index]
                who, n = self.clients[c].describe(), self.policy.retries
                _say(WARNING, f"client {who} failed ({context}): {f.reason}; on_failure=wait: "
                     f"re-sending (attempt {attempt} of {n})")  # fmt: skip
                info = self._recover(grid, c, stage, context, force=attempt > 1)
                final[c] = copy_message(final[c], info.node_id, attempt=attempt)
                self._record("down", final[c], info, stage, round_)
                again.append(c)
            todo = again
        uses = self._uplinks.uses(list(range(len(msgs))), sizes)
        for c, reply in enumerate(out):
            if reply is not None:
                self._record("up", reply, self.clients[c], stage, round_, uses(c, reply))
        return out, final

    def _record(
        self, direction: str, msg: Message, info: ClientInfo, stage: str, round_: int,
        uses: Mapping[str, int] | None = None,
    ) -> None:  # fmt: skip
        m = self.messenger
        record_transfer(
            m.ledger, direction, msg.content, stage=stage, round_=round_, client=info.label,
            kinds=m.kinds, uses=uses,
        )  # fmt: skip

    def _abort(self, client: ClientInfo, kind: str, reason: str, context: str, n: int) -> None:
        """The one ERROR line of a run that ``wait`` cannot save, raised."""
        action, _, where = context.partition(", ")
        tail = f"on_failure=wait after {n} re-send(s): run aborted (completed rounds are kept)"
        if kind == "timeout":
            _fail(f"{action}: {reason} from {client.describe()} ({where}); {tail}",
                  ClientTimeoutError)  # fmt: skip
        _fail(f"client {client.describe()} failed in {action} ({where}): {reason}; {tail}")

    # ------------------------------------------------------------------ recovery
    def _recover(self, grid: Grid, c: int, stage: str, context: str, force: bool) -> ClientInfo:
        """Wait for client ``c``'s node, bring its split state to where the server left it;
        return its (possibly new) node."""
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        pause, grow, longest = BACKOFF
        while True:
            info = self._find_node(grid, c)
            why = "its node is not listed (offline)"
            if info is not None:
                try:
                    self._resync(grid, c, info, stage, force)
                    return info
                except _NotBackError as err:
                    why = str(err)
            now = time.monotonic()
            who = self.clients[c].describe()
            if now >= deadline:
                _fail(f"client {who} not back within timeout={self.timeout:g} s after it failed "
                      f"({context}): {why}; on_failure=wait: run aborted (completed rounds are "
                      "kept)", ClientTimeoutError)  # fmt: skip
            _say(INFO, f"waiting for client {who} ({context}): {why}; {now - t0:.0f} s so far, "
                 f"giving up after timeout={self.timeout:g} s")  # fmt: skip
            time.sleep(min(pause, max(deadline - now, 0.0)))
            pause = min(pause * grow, longest)

    def _find_node(self, grid: Grid, c: int) -> ClientInfo | None:
        """Client ``c``'s node if listed; else a new node that serves its partition."""
        info = self.clients[c]
        nodes = set(grid.get_node_ids())
        if info.node_id in nodes:
            return info
        known = {k.node_id for k in self.clients} | self._rec.strangers
        for node in sorted(nodes - known):
            probe = ClientInfo(node, -1, "?")
            try:
                answer = self._ask(grid, probe, self._probe_msg(node), stage="")
            except _NotBackError:
                continue
            pid = int(answer.content.config_records["info"]["partition-id"])  # type: ignore[arg-type]
            if pid != info.partition_id:
                self._rec.strangers.add(node)
                continue
            new = ClientInfo(node, pid, info.role)
            _say(WARNING, f"client {info.describe()} is back as node {node}")
            self.clients[c] = new
            return new
        return None

    def _probe_msg(self, node: int) -> Message:
        return Message(RecordDict({"config": self._config(0)}), node, QUERY_STATE)

    def _ask(self, grid: Grid, info: ClientInfo, msg: Message, stage: str) -> Message:
        """One message to one client, waited for at most ``strategy.timeout`` s (counted in
        the ledger when ``stage``); :class:`_NotBackError` if it fails."""
        round_ = self._rec.round
        if stage:
            self._record("down", msg, info, stage, round_)
        action = msg.metadata.message_type
        (reply,), failures = collect(
            grid, [msg], [info], action=action, poll_interval=self.poll_interval,
            timeout=self.timeout,
        )  # fmt: skip
        if reply is None:
            raise _NotBackError(f"{action}: {failures[0].reason}")
        if stage:
            self._record("up", reply, info, stage, round_, self._uplinks.reply_uses(reply, msg))
        return reply

    def _expected(self, c: int) -> tuple[int, int]:
        """(round, exchange) of the split state client ``c`` should hold."""
        rec = self._rec
        if rec.sent.get(c):
            return rec.round, len(rec.sent[c]) - 1
        meta = rec.start.get(self.clients[c].partition_id, {}).get("meta")
        if meta is None:
            return 0, -1
        return int(meta["data"]["round"]), int(meta["data"]["exchange"])

    def _resync(self, grid: Grid, c: int, info: ClientInfo, stage: str, force: bool) -> None:
        """Ask client ``c`` where it is; unless it is where the server left it (and not
        ``force``), restore its round-start state and replay the round's exchanges so far."""
        answer = self._ask(grid, info, self._probe_msg(info.node_id), stage)
        got = answer.content.config_records["info"]
        held = (int(got["round"]), int(got["exchange"]))  # type: ignore[arg-type]
        expected = self._expected(c)
        if held == expected and not force:
            return
        rec = self._rec
        p = info.partition_id
        if p not in rec.start:
            _fail(f"client {info.describe()}: no state of the start of round {rec.round} to "
                  "restore; run aborted (completed rounds are kept)")  # fmt: skip
        sent = rec.sent.get(c, [])
        _say(WARNING, f"client {info.describe()} holds exchange {held[1]} of round {held[0]}, "
             f"expected exchange {expected[1]} of round {expected[0]}; restoring its state of "
             f"the start of round {rec.round} and replaying {len(sent)} exchange(s)")  # fmt: skip
        content = plain_to_records(rec.start[p])
        content["config"] = self._config(0)
        self._ask(grid, info, Message(content, info.node_id, RESTORE_STATE), stage)
        for k, (msg, digest) in enumerate(sent):
            reply = self._ask(grid, info, copy_message(msg, info.node_id), stage)
            if uplink_digest(reply) != digest:
                _fail(f"client {info.describe()}: the replay of exchange {k} of round "
                      f"{rec.round} gave another uplink than the original (not deterministic?); "
                      "run aborted (completed rounds are kept)")  # fmt: skip
        if sent:
            _say(INFO, f"client {info.describe()} replayed {len(sent)} exchange(s)")
