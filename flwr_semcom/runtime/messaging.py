"""The one messaging layer: push to every client at once, pull fast, apply the failure policy,
and record every transfer in the ledger.

``Grid.send_and_receive`` sleeps ``pull_interval`` (0.1 s in simulation, 3 s in deployment)
between pulls (../shared/FLOWER_NOTES.md §4). :func:`collect` pushes all messages of one
exchange (every client works in parallel where the engine allows), then pulls until each
client has answered or ``timeout`` s passed, pausing :func:`_pull_pause` (docs/performance.md);
in a simulation whose LinkState is signalled (:func:`flwr_semcom.runtime.simfeed.attach_signals`)
the pause ends as soon as a reply is stored.
:func:`send` raises on the first failure; :class:`Messenger` applies a
:class:`~flwr_semcom.reliability.FailurePolicy` (``abort`` / ``skip`` / ``wait`` with
re-sends). Both record what crossed the link in a :class:`~flwr_semcom.accounting.CommLedger`:

- one row per message and *kind* of payload present (``kinds`` maps a record name to its
  ledger kind, e.g. ``{"grads": "gradients", "uplink": "features"}``; every other record is
  ``control``), payload kinds in the message's record order, control last;
- the down rows of all messages when they are pushed (again for each re-send), the up rows of
  the replies in client order once every reply is in;
- sizes from :func:`~flwr_semcom.accounting.record_nbytes`, the client column
  ``"<partition>:<role>"`` (:attr:`ClientInfo.label`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from logging import DEBUG, ERROR, WARNING

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from flwr_semcom.accounting import CommLedger, record_nbytes
from flwr_semcom.reliability import FailurePolicy
from flwr_semcom.runtime.clients import (
    ClientError,
    ClientFailureError,
    ClientInfo,
    ClientTimeoutError,
    Failure,
    reason_summary,
)
from flwr_semcom.runtime.simfeed import SIGNALS_ATTR, StateSignals

__all__ = [
    "ClientError",
    "ClientFailureError",
    "ClientInfo",
    "ClientTimeoutError",
    "Failure",
    "Messenger",
    "collect",
    "record_transfer",
    "send",
]

#: Channel uses of a reply per record name, given the client index and the reply.
UsesFn = Callable[[int, Message], Mapping[str, int]]


def _pull_pause(poll_interval: float, waited: float) -> float:
    """Seconds before the next pull, ``waited`` s after the push: ``poll_interval``, growing to
    1 % of ``waited`` (a reply is seen ≤ 1 % late), at most max(poll_interval, 50 ms)."""
    return min(max(poll_interval, 0.01 * waited), max(poll_interval, 0.05))


def record_transfer(
    ledger: CommLedger,
    direction: str,
    content: RecordDict,
    *,
    stage: str,
    round_: int,
    client: str,
    kinds: Mapping[str, str] | None = None,
    uses: Mapping[str, int] | None = None,
) -> None:
    """Record one message's records: one row per kind present (payload kinds first, in record
    order, then ``control``); ``uses`` adds channel uses per record name to its kind's row."""
    kinds = kinds or {}
    uses = uses or {}
    sizes: dict[str, list[int]] = {}
    for name in content:
        kind = kinds.get(name, "control")
        entry = sizes.setdefault(kind, [0, 0])
        entry[0] += record_nbytes(content[name])
        entry[1] += int(uses.get(name, 0))
    order = [k for k in sizes if k != "control"] + (["control"] if "control" in sizes else [])
    for kind in order:
        nbytes, channel_uses = sizes[kind]
        ledger.record(
            direction=direction,
            stage=stage,
            kind=kind,
            nbytes=nbytes,
            channel_uses=channel_uses,
            round=round_,
            client=client,
        )


def collect(
    grid: Grid,
    messages: Sequence[Message],
    clients: Sequence[ClientInfo],
    *,
    action: str,
    poll_interval: float = 0.005,
    timeout: float = 600.0,
    stop_on_error: bool = False,
) -> tuple[list[Message | None], list[Failure]]:
    """Send ``messages[i]`` to ``clients[i]``; return the replies (None where a client failed)
    and the failures (error replies and clients silent for ``timeout`` seconds), raising
    nothing and recording nothing. Error replies are logged with the client, the action and
    the reason's summary. With ``stop_on_error`` it returns at the first error reply.
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
    signals = getattr(getattr(grid, "state", None), SIGNALS_ATTR, None)
    wake = signals.res if isinstance(signals, StateSignals) else None
    deadline = (start := time.monotonic()) + timeout
    while pending:
        if wake is not None:
            wake.clear()  # before the pull: a reply stored after it sets it again
        for reply in grid.pull_messages(list(pending)):
            mid = reply.metadata.reply_to_message_id
            if mid not in slot:
                continue
            i = slot[mid]
            pending.discard(mid)
            if reply.has_error():
                who = clients[i].describe()
                summary = reason_summary(reply.error.reason or "")
                log(ERROR, "client %s failed in %s: %s", who, action, summary)
                log(DEBUG, "full error reason from %s: %s", who, reply.error.reason)
                failures.append(Failure(i, "error", summary))
                continue
            replies[i] = reply
        if not pending or (stop_on_error and failures):
            break
        now = time.monotonic()
        if now > deadline:
            for i in sorted(slot[m] for m in pending):
                failures.append(Failure(i, "timeout", f"no reply within timeout={timeout:g} s"))
            break
        pause = min(_pull_pause(poll_interval, now - start), max(deadline - now, 0.0) + 1e-3)
        if wake is None:
            time.sleep(pause)
        else:
            wake.wait(pause)
    failures.sort(key=lambda f: f.index)
    return replies, failures


def send(
    grid: Grid,
    messages: Sequence[Message],
    clients: Sequence[ClientInfo],
    *,
    action: str,
    poll_interval: float = 0.005,
    timeout: float = 600.0,
    ledger: CommLedger | None = None,
    stage: str = "finetune",
    round_: int = 0,
    kinds: Mapping[str, str] | None = None,
) -> list[Message]:
    """Send ``messages[i]`` to ``clients[i]``, return the replies in the same order, and record
    both directions in ``ledger`` (if given; see the module docstring).

    Raises
    ------
    ClientError
        If a client replied with an error (logged first, naming the client and the action).
    ClientTimeoutError
        If some client did not reply within ``timeout`` seconds.
    """
    if ledger is not None:
        for msg, c in zip(messages, clients):
            record_transfer(
                ledger, "down", msg.content, stage=stage, round_=round_, client=c.label, kinds=kinds
            )
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
        raise ClientError(f"client {who} failed in {action}: {errors[0].reason}")
    if failures:
        missing = ", ".join(clients[f.index].describe() for f in failures)
        raise ClientTimeoutError(f"{action}: no reply within timeout={timeout:g} s from {missing}")
    out = [r for r in replies if r is not None]
    if ledger is not None:
        for reply, c in zip(out, clients):
            record_transfer(
                ledger, "up", reply.content, stage=stage, round_=round_, client=c.label, kinds=kinds
            )
    return out


def _resend(msg: Message, attempt: int) -> Message:
    """A copy of ``msg`` with ``attempt`` in its ``"config"`` record."""
    content = RecordDict()
    for name, record in msg.content.items():
        content[name] = record
    config = ConfigRecord(dict(msg.content.config_records["config"]))
    config["attempt"] = attempt
    content["config"] = config
    meta = msg.metadata
    return Message(content, meta.dst_node_id, meta.message_type, group_id=meta.group_id)


class Messenger:
    """Exchanges of one strategy with its clients under a failure policy, counted in a ledger.

    Parameters
    ----------
    ledger
        Where every transfer is recorded.
    policy
        ``abort`` (raise :class:`ClientFailureError` / :class:`ClientTimeoutError`), ``skip``
        (the failed clients are left out, reported by :meth:`deliver`) or ``wait`` (re-send
        ``retries`` times with ``attempt`` in the config record, then abort).
    poll_interval, timeout
        Shortest seconds between pulls (:func:`_pull_pause`); seconds to wait for a reply.
    kinds
        Record name → ledger kind (other records are ``control``).
    """

    def __init__(
        self,
        ledger: CommLedger,
        *,
        policy: FailurePolicy | None = None,
        poll_interval: float = 0.005,
        timeout: float = 600.0,
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        self.ledger = ledger
        self.policy = policy or FailurePolicy()
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.kinds = dict(kinds or {})

    def _down(self, msg: Message, client: ClientInfo, stage: str, round_: int) -> None:
        record_transfer(
            self.ledger,
            "down",
            msg.content,
            stage=stage,
            round_=round_,
            client=client.label,
            kinds=self.kinds,
        )

    def deliver(
        self,
        grid: Grid,
        targets: Sequence[tuple[ClientInfo, Message]],
        *,
        stage: str,
        round_: int,
        where: str,
        uses: Callable[[int, Message], Mapping[str, int]] | None = None,
    ) -> tuple[list[Message | None], dict[int, str]]:
        """Send each ``(client, message)`` of ``targets`` and apply the policy to failures.

        Returns the replies in ``targets`` order (``None`` for a client skipped under
        ``skip``) and ``{target index: reason}`` of the clients skipped. ``uses(i, reply)``
        gives the channel uses of a reply per record name for the ledger.
        """
        for client, msg in targets:
            self._down(msg, client, stage, round_)
        todo = [(i, c, m) for i, (c, m) in enumerate(targets)]
        out: list[Message | None] = [None] * len(targets)
        skipped: dict[int, str] = {}
        policy, attempt = self.policy.on_failure, 0
        action = targets[0][1].metadata.message_type if targets else ""
        while todo:
            replies, failures = collect(
                grid,
                [m for _, _, m in todo],
                [c for _, c, _ in todo],
                action=action,
                poll_interval=self.poll_interval,
                timeout=self.timeout,
                stop_on_error=policy == "abort",
            )
            for (i, _, _), reply in zip(todo, replies):
                if reply is not None:
                    out[i] = reply
            if not failures:
                break
            failed = [(todo[f.index], f) for f in failures]
            context = f"{action}, round {round_}, {where}"
            if policy == "wait" and attempt < self.policy.retries:
                attempt += 1
                todo = []
                for (i, c, m), f in failed:
                    log(
                        WARNING,
                        "reliability: client %s failed (%s): %s; on_failure=wait: re-sending "
                        "(attempt %d of %d)",
                        c.describe(),
                        context,
                        f.reason,
                        attempt,
                        self.policy.retries,
                    )
                    again = _resend(m, attempt)
                    self._down(again, c, stage, round_)
                    todo.append((i, c, again))
                continue
            if policy == "skip":
                for (i, c, _), f in failed:
                    skipped[i] = f.reason
                    log(
                        WARNING,
                        "reliability: client %s failed (%s): %s; on_failure=skip: device skipped "
                        "for the rest of round %d (uplink zero-filled, no gradients)",
                        c.describe(),
                        context,
                        f.reason,
                        round_,
                    )
                break
            (_, c, _), f = failed[0]
            self._abort(c, f, context, attempt)
        for i, (client, _) in enumerate(targets):
            reply = out[i]
            if reply is not None:
                record_transfer(
                    self.ledger,
                    "up",
                    reply.content,
                    stage=stage,
                    round_=round_,
                    client=client.label,
                    kinds=self.kinds,
                    uses=uses(i, reply) if uses is not None else None,
                )
        return out, skipped

    def _abort(self, client: ClientInfo, failure: Failure, context: str, attempt: int) -> None:
        """Log the one ERROR line of an aborted run and raise it."""
        who = client.describe()
        policy = self.policy.on_failure
        resent = f" after {attempt} re-send(s)" if policy == "wait" else ""
        action, _, where = context.partition(", ")
        tail = f"on_failure={policy}{resent}: run aborted (completed rounds are kept)"
        if failure.kind == "timeout":
            msg = f"{action}: {failure.reason} from {who} ({where}); {tail}"
            log(ERROR, "reliability: %s", msg)
            raise ClientTimeoutError(msg)
        msg = f"client {who} failed in {action} ({where}): {failure.reason}; {tail}"
        log(ERROR, "reliability: %s", msg)
        raise ClientFailureError(msg)
