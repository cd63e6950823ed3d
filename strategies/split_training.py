"""Split-training strategy: the server side of split learning on Flower (docs/split.md).

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. III-B (Stage II, eq. 16-17): each device m
sends its received features ẑ^m, the server runs g on concat(ẑ^1, …, ẑ^M), computes the loss,
steps its optimizer and returns ∂L/∂ẑ^m to every device. The server model and loss come from
a pluggable :class:`~flwr_semcom.split.tasks.ServerTask`; the clients run the matching client
task (``train.split_step`` / ``evaluate.split_forward``, :mod:`flwr_semcom.split.client`).

One Flower round is one pass over the aligned training IDs. The pass is cut into batches of
``strategy.batch_size`` and the batches into groups of S = ``strategy.steps_per_message``;
exchange j (j = 0..G) sends every client the gradients of group j-1 and the plan of group j,
then the server takes one step per batch of group j on the replies. After the pass the test
set goes through ``evaluate.split_forward`` (no gradients). Every transfer is recorded in
:attr:`SplitTraining.ledger`.

Why ``start()`` is overridden: ``Strategy.start`` does one ``send_and_receive`` per round
(configure → aggregate), while a split round is G + 1 dependent exchanges, and
``send_and_receive`` polls every 0.1 s (simulation) / 3 s (deployment). ``start`` here loops
the exchanges and moves messages with :func:`flwr_semcom.split.exchange.exchange` (push to all
clients at once, pull every ``strategy.poll_interval``). The hooks keep their Flower roles:
``configure_train`` builds the messages of the next exchange, ``aggregate_train`` runs the
server steps on the replies, ``configure_evaluate`` / ``aggregate_evaluate`` do the same for
the evaluation chunks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from logging import ERROR, INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy
from omegaconf import DictConfig

from flwr_semcom.accounting import CommLedger
from flwr_semcom.checkpoint import (
    CheckpointError,
    load_state_strict,
    plain_to_records,
    records_to_plain,
)
from flwr_semcom.config import resolve_device
from flwr_semcom.data.partition import check_alignment
from flwr_semcom.reliability import FailurePolicy
from flwr_semcom.split import ServerTask, build_server_task, check_split_config
from flwr_semcom.split.exchange import ClientInfo, Failure, SplitClientError, collect, exchange
from flwr_semcom.split.protocol import (
    EVAL_FORWARD,
    QUERY_CHECKPOINT,
    QUERY_STATE,
    RESTORE_STATE,
    TRAIN_STEP,
    encode_plan,
    pack_tensors,
    record_nbytes,
    to_tensor,
    unpack_tensors,
)
from flwr_semcom.split.schedule import (
    BatchPlan,
    client_plans,
    derive_seed,
    eval_batches,
    group,
    train_batches,
)

__all__ = ["ClientFailureError", "ClientTimeoutError", "SplitTraining"]

RoundCallback = Callable[[dict[str, Any]], None]


class ClientFailureError(SplitClientError):
    """A client failed and the ``reliability.on_failure`` policy stops the run (one line)."""


class ClientTimeoutError(ClientFailureError, TimeoutError):
    """A client did not answer within ``strategy.timeout`` and the policy stops the run."""


@dataclass
class _Pass:
    """Progress of one training pass (one round)."""

    round: int
    groups: list[list[BatchPlan]]
    plans: list[list[list[BatchPlan]]]  # [client][group][batch]
    exchange: int = 0
    grads: list[list[dict[str, torch.Tensor]]] | None = None  # [client][batch]
    sums: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)  # push → last reply, per exchange

    @property
    def done(self) -> bool:
        return self.exchange > len(self.groups)


@dataclass
class _Eval:
    """Progress of one evaluation."""

    chunks: list[list[BatchPlan]]
    plans: list[list[list[BatchPlan]]]  # [client][chunk][batch]
    chunk: int = 0
    sums: dict[str, float] = field(default_factory=dict)


def _add(sums: dict[str, float], stats: dict[str, float]) -> None:
    for k, v in stats.items():
        sums[k] = sums.get(k, 0.0) + float(v)


class SplitTraining(Strategy):
    """Split learning with S batches per message, over any number of clients.

    Parameters
    ----------
    cfg
        The composed config (``strategy`` group: ``conf/strategy/split.yaml``).
    experiment, overrides
        The run config strings the clients compose their config from (sent in every message).
    stage
        Ledger stage of the training transfers (``"finetune"`` for Stage II, ``"pretrain"``
        for Stage I ``split``, ``"align"`` for SLF).
    server_task
        The server model and loss; default: ``build_server_task(cfg.strategy.server_task)``.
    client_task
        Name of the client task; default: ``server_task.client_task``.
    ledger
        Where transfers are recorded (a new :class:`CommLedger` by default).
    """

    def __init__(
        self,
        cfg: DictConfig,
        *,
        experiment: str = "main",
        overrides: str = "",
        stage: str = "finetune",
        server_task: ServerTask | None = None,
        client_task: str | None = None,
        ledger: CommLedger | None = None,
    ) -> None:
        check_split_config(cfg)
        self.cfg = cfg
        s = cfg.strategy
        self.experiment = experiment
        self.overrides = overrides
        self.stage = stage
        self.seed = int(cfg.seed)
        self.rounds = int(s.rounds)
        self.batch_size = int(s.batch_size)
        self.steps_per_message = int(s.steps_per_message)
        self.eval_batch_size = int(s.eval_batch_size)
        self.eval_per_message = int(s.eval_batches_per_message)
        self.poll_interval = float(s.poll_interval)
        self.timeout = float(s.timeout)
        self.node_wait = float(s.get("node_wait", 120.0))
        self.drop_last = bool(s.get("drop_last", False))
        self.profile = bool(s.get("profile", False))
        torch.set_num_threads(int(cfg.num_threads))
        self.device = torch.device(resolve_device(str(cfg.device)))
        self.server = server_task or build_server_task(str(s.server_task), cfg)
        self.server.model.to(self.device)
        self.client_task = client_task or self.server.client_task
        self.ledger = ledger if ledger is not None else CommLedger()
        self.clients: list[ClientInfo] = []
        self.history: list[dict[str, Any]] = []
        self._pass: _Pass | None = None
        self._eval: _Eval | None = None
        self.policy = FailurePolicy.from_config(cfg)
        #: clients dropped for the rest of the current round (on_failure=skip): index → reason
        self.skipped: dict[int, str] = {}
        #: per client, the shape (without the batch dimension) and dtype of each uplink tensor
        self._templates: dict[int, dict[str, tuple[tuple[int, ...], torch.dtype]]] = {}

    # ------------------------------------------------------------------ messages
    def _config(self, server_round: int, **extra: Any) -> ConfigRecord:
        rec: dict[str, Any] = {
            "experiment": self.experiment,
            "overrides": self.overrides,
            "task": self.client_task,
            "stage": self.stage,
            "round": server_round,
        }
        rec.update(extra)
        rec["profile"] = self.profile
        return ConfigRecord(rec)

    def _label(self, c: int) -> str:
        info = self.clients[c]
        return f"{info.partition_id}:{info.role}"

    def _record_down(self, msg: Message, c: int, stage: str, server_round: int) -> None:
        content = msg.content
        if "grads" in content:
            self.ledger.record(
                direction="down",
                stage=stage,
                kind="gradients",
                nbytes=record_nbytes(content["grads"]),
                round=server_round,
                client=self._label(c),
            )
        control = sum(record_nbytes(content[k]) for k in ("config", "plan") if k in content)
        self.ledger.record(
            direction="down",
            stage=stage,
            kind="control",
            nbytes=control,
            round=server_round,
            client=self._label(c),
        )

    def _record_up(self, reply: Message, c: int, stage: str, server_round: int, uses: int) -> None:
        content = reply.content
        if "uplink" in content:
            self.ledger.record(
                direction="up",
                stage=stage,
                kind="features",
                nbytes=record_nbytes(content["uplink"]),
                channel_uses=uses,
                round=server_round,
                client=self._label(c),
            )
        if "timing" in content:
            self.ledger.record(
                direction="up",
                stage=stage,
                kind="control",
                nbytes=record_nbytes(content["timing"]),
                round=server_round,
                client=self._label(c),
            )

    # ------------------------------------------------------------------ Strategy hooks
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Messages of the next exchange of the current pass (gradients and/or plan)."""
        p = self._pass
        if p is None or p.round != server_round or p.done:
            raise RuntimeError(f"configure_train: no exchange pending in round {server_round}")
        msgs = []
        for c, info in enumerate(self.clients):
            if c in self.skipped:
                continue
            content = RecordDict({"config": self._config(server_round, exchange=p.exchange)})
            if p.grads is not None:
                content["grads"] = pack_tensors(p.grads[c])
            if p.exchange < len(p.groups):
                content["plan"] = encode_plan(p.plans[c][p.exchange])
            msg = Message(content, info.node_id, TRAIN_STEP, group_id=str(server_round))
            self._record_down(msg, c, self.stage, server_round)
            msgs.append(msg)
        return msgs

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message | None]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Server steps on the uplinks of the current group; keep ∂L/∂uplink for the next one.

        ``replies`` are in client order; ``None`` marks a skipped client (zero-filled uplink).
        """
        p = self._pass
        if p is None or p.round != server_round:
            raise RuntimeError(f"aggregate_train: no pass in round {server_round}")
        replies = list(replies)
        j = p.exchange
        p.exchange += 1
        if j >= len(p.groups):  # the last exchange carries gradients only
            for c, reply in enumerate(replies):
                if reply is not None:
                    self._record_up(reply, c, self.stage, server_round, 0)
            self._add_timing(p.times, replies)
            p.grads = None
            return None, None
        batches = p.groups[j]
        sizes = [b.size for b in batches]
        uplinks = self._uplinks(replies, sizes, self.stage, server_round)
        self._add_timing(p.times, replies)
        t0 = time.perf_counter()
        grads: list[list[dict[str, torch.Tensor]]] = [[] for _ in self.clients]
        sums: dict[str, float] = {}
        for t, batch in enumerate(batches):
            torch.manual_seed(
                derive_seed(self.seed, "server", self.stage, server_round, batch.index)
            )
            step = self.server.train_step([uplinks[c][t] for c in range(len(self.clients))], batch)
            for c, g in enumerate(step.grads):
                grads[c].append({k: v.detach().cpu() for k, v in g.items()})
            _add(sums, step.stats)
        p.times["server_s"] = p.times.get("server_s", 0.0) + time.perf_counter() - t0
        p.grads = grads
        _add(p.sums, sums)
        return None, MetricRecord({k: float(v) for k, v in sums.items()})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Messages of the next evaluation chunk (plans only; no gradients)."""
        e = self._eval
        if e is None or e.chunk >= len(e.chunks):
            raise RuntimeError("configure_evaluate: no evaluation chunk pending")
        msgs = []
        for c, info in enumerate(self.clients):
            if c in self.skipped:
                continue
            content = RecordDict(
                {
                    "config": self._config(server_round),
                    "plan": encode_plan(e.plans[c][e.chunk]),
                }
            )
            msg = Message(content, info.node_id, EVAL_FORWARD, group_id=str(server_round))
            self._record_down(msg, c, "eval", server_round)
            msgs.append(msg)
        return msgs

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message | None]
    ) -> MetricRecord | None:
        """Server metrics of the current evaluation chunk (``None`` = skipped, zero-filled)."""
        e = self._eval
        if e is None:
            raise RuntimeError("aggregate_evaluate: no evaluation running")
        batches = e.chunks[e.chunk]
        e.chunk += 1
        sizes = [b.size for b in batches]
        uplinks = self._uplinks(replies, sizes, "eval", server_round)
        sums: dict[str, float] = {}
        for t, batch in enumerate(batches):
            _add(sums, self.server.eval_step([u[t] for u in uplinks], batch))
        _add(e.sums, sums)
        return MetricRecord({k: float(v) for k, v in sums.items()})  # type: ignore[arg-type]

    def summary(self) -> None:
        """Log the configuration of the strategy."""
        log(
            INFO,
            "SplitTraining: task=%s/%s clients=%d rounds=%d batch=%d S=%d lr=%g "
            "momentum=%g wd=%g train=%d test=%d poll=%gs",
            self.client_task,
            type(self.server).__name__,
            self.server.num_clients,
            self.rounds,
            self.batch_size,
            self.steps_per_message,
            float(self.cfg.strategy.lr),
            float(self.cfg.strategy.momentum),
            float(self.cfg.strategy.weight_decay),
            int(self.server.train_ids.shape[0]),
            int(self.server.test_ids.shape[0]),
            self.poll_interval,
        )

    # ------------------------------------------------------------------ helpers
    def _uplinks(
        self, replies: Iterable[Message | None], sizes: list[int], stage: str, server_round: int
    ) -> list[list[dict[str, torch.Tensor]]]:
        """Every client's uplinks per batch, recorded in the ledger; zeros for skipped ones."""
        uplinks: list[list[dict[str, torch.Tensor]]] = []
        for c, reply in enumerate(replies):
            if reply is None:
                uplinks.append(self._zero_uplinks(c, sizes, server_round))
                continue
            if "uplink" not in reply.content:
                raise RuntimeError(f"client {self.clients[c].describe()} sent no uplink")
            ups = unpack_tensors(reply.content.array_records["uplink"], sizes)
            self._templates[c] = {k: (tuple(v.shape[1:]), v.dtype) for k, v in ups[0].items()}
            uses = sum(self.server.channel_uses(u) for u in ups)
            self._record_up(reply, c, stage, server_round, uses)
            uplinks.append([{k: v.to(self.device) for k, v in u.items()} for u in ups])
        return uplinks

    def _zero_uplinks(
        self, c: int, sizes: list[int], server_round: int
    ) -> list[dict[str, torch.Tensor]]:
        """ẑ = 0 for a skipped client (like a dropped modality), shaped as its last uplink."""
        template = self._templates.get(c)
        if template is None:
            msg = (
                f"client {self.clients[c].describe()} was skipped in round {server_round} before "
                "it ever sent an uplink, so its features cannot be zero-filled; "
                "on_failure=skip needs one successful exchange per client first"
            )
            log(ERROR, "reliability: %s", msg)
            raise ClientFailureError(msg)
        return [
            {
                k: torch.zeros((n, *shape), dtype=dt, device=self.device)
                for k, (shape, dt) in template.items()
            }
            for n in sizes
        ]

    def _resend(self, msg: Message, attempt: int, c: int, stage: str, server_round: int) -> Message:
        """A copy of ``msg`` with ``attempt`` in its config (counted in the ledger again)."""
        content = RecordDict()
        for name, record in msg.content.items():
            content[name] = record
        config = ConfigRecord(dict(msg.content.config_records["config"]))
        config["attempt"] = attempt
        content["config"] = config
        meta = msg.metadata
        new = Message(content, meta.dst_node_id, meta.message_type, group_id=meta.group_id)
        self._record_down(new, c, stage, server_round)
        return new

    def _deliver(
        self, grid: Grid, msgs: Sequence[Message], stage: str, server_round: int, where: str
    ) -> list[Message | None]:
        """Send one exchange's messages and apply ``reliability.on_failure`` to failures.

        Returns the replies in client order, ``None`` for clients skipped in this round.
        """
        by_node = {info.node_id: c for c, info in enumerate(self.clients)}
        todo = [(by_node[m.metadata.dst_node_id], m) for m in msgs]
        out: list[Message | None] = [None] * len(self.clients)
        policy, attempt = self.policy.on_failure, 0
        action = msgs[0].metadata.message_type if msgs else ""
        while todo:
            replies, failures = collect(
                grid,
                [m for _, m in todo],
                [self.clients[c] for c, _ in todo],
                action=action,
                poll_interval=self.poll_interval,
                timeout=self.timeout,
                stop_on_error=policy == "abort",
            )
            for (c, _), reply in zip(todo, replies):
                if reply is not None:
                    out[c] = reply
            if not failures:
                break
            failed = [(todo[f.index][0], todo[f.index][1], f) for f in failures]
            context = f"{action}, round {server_round}, {where}"
            if policy == "wait" and attempt < self.policy.retries:
                attempt += 1
                for c, _, f in failed:
                    log(
                        WARNING,
                        "reliability: client %s failed (%s): %s; on_failure=wait: re-sending "
                        "(attempt %d of %d)",
                        self.clients[c].describe(),
                        context,
                        f.reason,
                        attempt,
                        self.policy.retries,
                    )
                todo = [(c, self._resend(m, attempt, c, stage, server_round)) for c, m, _ in failed]
                continue
            if policy == "skip":
                for c, _, f in failed:
                    self.skipped[c] = f.reason
                    log(
                        WARNING,
                        "reliability: client %s failed (%s): %s; on_failure=skip: device skipped "
                        "for the rest of round %d (uplink zero-filled, no gradients)",
                        self.clients[c].describe(),
                        context,
                        f.reason,
                        server_round,
                    )
                if len(self.skipped) == len(self.clients):
                    msg = f"every client failed in round {server_round} ({context}); run aborted"
                    log(ERROR, "reliability: %s", msg)
                    raise ClientFailureError(msg)
                break
            self._abort(failed[0][0], failed[0][2], context, attempt)
        return out

    def _abort(self, c: int, failure: Failure, context: str, attempt: int) -> None:
        """Log the one ERROR line of an aborted run and raise it."""
        who = self.clients[c].describe()
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

    def _add_timing(self, times: dict[str, float], replies: Sequence[Message | None]) -> None:
        """Add this exchange's slowest client's load / compute / save times to ``times``."""
        recs = [
            r.content.metric_records["timing"]
            for r in replies
            if r is not None and "timing" in r.content
        ]
        if not recs:
            return
        for k in ("load_s", "compute_s", "save_s"):
            slowest = max(float(rec.get(k, 0.0)) for rec in recs)  # type: ignore[arg-type]
            times[f"client_{k}"] = times.get(f"client_{k}", 0.0) + slowest

    def _send(self, grid: Grid, msgs: Iterable[Message], action: str) -> list[Message]:
        return exchange(
            grid,
            list(msgs),
            self.clients,
            action=action,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )

    def discover(self, grid: Grid) -> list[ClientInfo]:
        """Find the node of every partition ``0..num_clients-1`` (``query.split_state``)."""
        need = self.server.num_clients
        deadline = time.monotonic() + self.node_wait
        nodes = sorted(grid.get_node_ids())
        while len(nodes) < need:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(nodes)} of {need} clients connected after strategy.node_wait="
                    f"{self.node_wait:g} s; start more SuperNodes (or num-supernodes={need})"
                )
            time.sleep(0.2)
            nodes = sorted(grid.get_node_ids())
        probes = [ClientInfo(n, -1, "?") for n in nodes]
        msgs = [
            Message(RecordDict({"config": self._config(0)}), n, QUERY_STATE, group_id="0")
            for n in nodes
        ]
        replies = exchange(  # the first message starts the client (imports, data): node_wait
            grid,
            msgs,
            probes,
            action=QUERY_STATE,
            poll_interval=self.poll_interval,
            timeout=max(self.timeout, self.node_wait),
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
                    f"client node {node} (partition {pid}) cannot run task "
                    f"{self.client_task!r}: {error}"
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
        self.clients = [by_partition[p] for p in range(need)]
        check_alignment(fingerprints)  # one line naming the devices whose sample IDs differ

        def partition_of(reply: Message) -> int:
            return int(reply.content.config_records["info"]["partition-id"])  # type: ignore[arg-type]

        # in partition order: node IDs are random, the ledger must not depend on them
        for msg, reply in sorted(zip(msgs, replies), key=lambda mr: partition_of(mr[1])):
            pid = partition_of(reply)
            label = f"{pid}:{reply.content.config_records['info']['role']!s}"
            for direction, nbytes in (
                ("down", record_nbytes(msg.content["config"])),
                ("up", record_nbytes(reply.content["info"])),
            ):
                self.ledger.record(
                    direction=direction,
                    stage=self.stage,
                    kind="control",
                    nbytes=nbytes,
                    round=0,
                    client=label,
                )
        log(INFO, "split: clients %s", ", ".join(c.describe() for c in self.clients))
        return self.clients

    def fetch_client_states(self, grid: Grid) -> dict[int, dict[str, torch.Tensor]]:
        """Every client's model ``state_dict`` by partition (``query.split_state``; not in
        the ledger: a checkpoint / test utility, not part of the algorithm)."""
        msgs = [
            Message(RecordDict({"config": self._config(0, weights=True)}), c.node_id, QUERY_STATE)
            for c in self.clients
        ]
        replies = self._send(grid, msgs, QUERY_STATE)
        return {
            c.partition_id: {k: to_tensor(v) for k, v in r.content.array_records["state"].items()}
            for c, r in zip(self.clients, replies)
        }

    # ------------------------------------------------------------------ checkpoints
    def fetch_client_checkpoint(
        self, grid: Grid, previous: dict[int, Any] | None = None, server_round: int = 0
    ) -> dict[int, Any]:
        """Every client's ``split.<task>.*`` records as plain data, by partition
        (``query.split_checkpoint``; not in the ledger). A client that does not answer keeps
        its state from ``previous`` (a skipped device), else :class:`ClientFailureError`."""
        msgs = [
            Message(RecordDict({"config": self._config(0)}), c.node_id, QUERY_CHECKPOINT)
            for c in self.clients
        ]
        replies, failures = collect(
            grid,
            msgs,
            self.clients,
            action=QUERY_CHECKPOINT,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )
        out: dict[int, Any] = {}
        for c, reply in zip(self.clients, replies):
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
                reason = next(f.reason for f in failures if self.clients[f.index] == c)
                msg = (
                    f"checkpoint after round {server_round}: cannot fetch the state of client "
                    f"{c.describe()}: {reason}; run aborted (completed rounds are kept)"
                )
                log(ERROR, "reliability: %s", msg)
                raise ClientFailureError(msg)
        return out

    def restore_clients(self, grid: Grid, states: dict[int, Any]) -> None:
        """Send every client its checkpointed records (``train.split_restore``)."""
        msgs = []
        for c in self.clients:
            if c.partition_id not in states:
                raise CheckpointError(f"checkpoint has no state for partition {c.partition_id}")
            content = plain_to_records(states[c.partition_id])
            content["config"] = self._config(0)
            msgs.append(Message(content, c.node_id, RESTORE_STATE))
        self._send(grid, msgs, RESTORE_STATE)

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

    # ------------------------------------------------------------------ rounds
    def new_pass(self, server_round: int) -> _Pass:
        """Plan the training pass of ``server_round`` (shared by every client)."""
        batches = train_batches(
            self.server.train_ids,
            self.batch_size,
            seed=self.seed,
            round_=server_round,
            stage=self.stage,
            drop_last=self.drop_last,
        )
        if not batches:
            raise RuntimeError(
                f"no training batch: {self.server.train_ids.shape[0]} training samples, "
                f"strategy.batch_size={self.batch_size}"
            )
        plans = [
            group(
                client_plans(batches, c, seed=self.seed, stage=self.stage, round_=server_round),
                self.steps_per_message,
            )
            for c in range(len(self.clients))
        ]
        return _Pass(server_round, group(batches, self.steps_per_message), plans)

    def train_round(self, grid: Grid, server_round: int) -> dict[str, float]:
        """Run one training pass; return its metrics and timings."""
        self._pass = p = self.new_pass(server_round)
        self.server.start_round(server_round)
        t0 = time.perf_counter()
        while not p.done:
            msgs = list(self.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid))
            t1 = time.perf_counter()
            where = f"exchange {p.exchange}"
            replies = self._deliver(grid, msgs, self.stage, server_round, where)
            p.waits.append(time.perf_counter() - t1)
            self.aggregate_train(server_round, replies)
        n = max(p.sums.get("n", 0.0), 1.0)
        out = {
            "loss": p.sums.get("loss_sum", 0.0) / n,
            "train_accuracy": p.sums.get("correct", 0.0) / n,
            "train_samples": p.sums.get("n", 0.0),
            "exchanges": float(len(p.groups) + 1),
            "train_time_s": time.perf_counter() - t0,
            "wait_s": sum(p.waits),
            "wait_median_s": statistics.median(p.waits),
        }
        out.update(p.times)
        self._pass = None
        return out

    def evaluate_round(self, grid: Grid, server_round: int) -> dict[str, float]:
        """Evaluate the test IDs through ``evaluate.split_forward``; return metrics."""
        t0 = time.perf_counter()
        batches = eval_batches(self.server.test_ids, self.eval_batch_size)
        if not batches:
            return {}
        per = self.eval_per_message or len(batches)
        plans = [
            group(client_plans(batches, c, seed=self.seed, stage="eval", round_=0), per)
            for c in range(len(self.clients))
        ]
        self._eval = e = _Eval(group(batches, per), plans)
        while e.chunk < len(e.chunks):
            msgs = list(self.configure_evaluate(server_round, ArrayRecord(), ConfigRecord(), grid))
            where = f"evaluation chunk {e.chunk}"
            self.aggregate_evaluate(
                server_round, self._deliver(grid, msgs, "eval", server_round, where)
            )
        n = max(e.sums.get("n", 0.0), 1.0)
        self._eval = None
        return {
            "test_loss": e.sums.get("loss_sum", 0.0) / n,
            "test_accuracy": e.sums.get("correct", 0.0) / n,
            "eval_time_s": time.perf_counter() - t0,
        }

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord | None = None,
        num_rounds: int | None = None,
        timeout: float | None = None,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        *,
        on_round: RoundCallback | None = None,
        first_round: int = 1,
    ) -> Result:
        """Run ``num_rounds`` (default ``strategy.rounds``) passes, each followed by evaluation.

        ``initial_arrays`` (optional) are loaded into the server model; ``timeout`` overrides
        ``strategy.timeout``; ``train_config`` / ``evaluate_config`` are not used (the clients
        read the hydra config). ``on_round(row)`` is called after every round with the row of
        metrics that also goes to :attr:`history`. ``first_round`` > 1 continues a resumed run
        (server and clients restored from a checkpoint first).
        """
        if train_config or evaluate_config:
            log(WARNING, "SplitTraining ignores train_config / evaluate_config (hydra config)")
        if timeout is not None:
            self.timeout = float(timeout)
        if initial_arrays is not None and len(initial_arrays) > 0:
            self.server.model.load_state_dict(initial_arrays.to_torch_state_dict())
        rounds = self.rounds if num_rounds is None else int(num_rounds)
        self.summary()
        t_start = time.perf_counter()
        if not self.clients:
            self.discover(grid)
        result = Result()
        for r in range(first_round, rounds + 1):
            t_round = time.perf_counter()
            self.skipped = {}
            row: dict[str, Any] = {"round": r}
            row.update(self.train_round(grid, r))
            row.update(self.evaluate_round(grid, r))
            row["skipped"] = " ".join(self._label(c) for c in sorted(self.skipped))
            row["round_time_s"] = time.perf_counter() - t_round
            row["wall_time_s"] = time.perf_counter() - t_start
            row["up_bytes"] = self.ledger.total("bytes", direction="up", max_round=r)
            row["down_bytes"] = self.ledger.total("bytes", direction="down", max_round=r)
            row["channel_uses"] = self.ledger.total("channel_uses", max_round=r)
            self.history.append(row)
            result.train_metrics_clientapp[r] = MetricRecord(
                {k: float(row[k]) for k in ("loss", "train_accuracy", "train_time_s")}
            )
            if "test_accuracy" in row:
                result.evaluate_metrics_clientapp[r] = MetricRecord(
                    {k: float(row[k]) for k in ("test_loss", "test_accuracy")}
                )
            bits = 8 * (row["up_bytes"] + row["down_bytes"])
            log(
                INFO,
                "split round %d/%d: loss %.4f train acc %.4f test acc %.4f | %.3g bits "
                "(%d channel uses) | %.1f s",
                r,
                rounds,
                row["loss"],
                row["train_accuracy"],
                row.get("test_accuracy", float("nan")),
                bits,
                row["channel_uses"],
                row["round_time_s"],
            )
            if evaluate_fn is not None:
                res = evaluate_fn(r, ArrayRecord(self.server.model.state_dict()))
                if res is not None:
                    result.evaluate_metrics_serverapp[r] = res
            if on_round is not None:
                on_round(row)
        result.arrays = ArrayRecord(self.server.model.state_dict())
        return result


def server_state(strategy: SplitTraining) -> dict[str, torch.Tensor]:
    """A detached copy of the server model's ``state_dict``."""
    return {k: v.detach().cpu().clone() for k, v in strategy.server.model.state_dict().items()}


def client_order(clients: Sequence[ClientInfo]) -> list[int]:
    """Partition IDs in the order the server concatenates the uplinks."""
    return [c.partition_id for c in clients]
