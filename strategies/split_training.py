"""Split-training strategy: the server side of split learning on Flower (docs/split.md).

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. III-B (eq. 16-17): each device m sends its
received features ẑ^m, the server runs g on concat(ẑ^1, …, ẑ^M), steps its optimizer and
returns ∂L/∂ẑ^m to every device. Server model and loss: a :class:`~flwr_semcom.split.ServerTask`
(e.g. :class:`~flwr_semcom.split.DecoderServer`); clients: the task ``client_task`` of
:func:`flwr_semcom.split.add_split_client` (``train.split_step``, ``evaluate.split_forward``).

One Flower round is one pass over the aligned training IDs, cut into batches of
``batch_size`` and groups of S = ``steps_per_message`` batches: exchange j (j = 0..G) sends
every client the gradients of group j-1 and the plan of group j, then the server takes one step
per batch of group j on the replies. After the pass the test set, then the validation set
(``server_task.val_ids``, if any), go through ``evaluate.split_forward`` (no gradients).

``start()`` is overridden: a split round is G + 1 dependent exchanges (Flower's ``start``
does one ``send_and_receive`` per round). The hooks keep their Flower roles (``configure_*``
build the messages of the next exchange / evaluation chunk, ``aggregate_*`` run the server
steps on the replies). Planning and round metrics: :mod:`strategies._split_plan`; discovery
and checkpoints :mod:`strategies._split_nodes`; uplinks :mod:`strategies._split_uplinks`;
evaluation (test, then validation) :mod:`strategies._split_eval`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from logging import WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from flwr_semcom.accounting import CommLedger
from flwr_semcom.reliability import FailurePolicy
from flwr_semcom.runtime.messaging import (
    ClientFailureError,
    ClientInfo,
    ClientTimeoutError,
    Messenger,
)
from flwr_semcom.split.protocol import (
    EVAL_FORWARD,
    TRAIN_STEP,
    config_record,
    encode_plan,
    pack_tensors,
)
from flwr_semcom.split.schedule import derive_seed
from flwr_semcom.split.settings import SERVER_GRADIENTS
from flwr_semcom.split.tasks import ServerTask
from strategies._split_eval import evaluate_round
from strategies._split_nodes import server_state
from strategies._split_plan import (
    EvalPlan,
    PassPlan,
    add_sums,
    add_timing,
    check_arguments,
    finish_round,
    log_summary,
    plan_pass,
    schedule_values,
)
from strategies._split_recovery import SplitRecovery
from strategies._split_uplinks import Uplinks

__all__ = ["ClientFailureError", "ClientTimeoutError", "SplitTraining", "server_state"]

RoundCallback = Callable[[dict[str, Any]], None]
#: What the ledger calls the records of a split exchange (everything else is ``control``).
KINDS = {"grads": "gradients", "uplink": "features"}


class SplitTraining(SplitRecovery, Strategy):
    """Split learning with S batches per message, over any number of clients.

    Parameters
    ----------
    server_task
        The server model, optimizer and loss, the train / test IDs and the number of clients.
    client_task
        Name of the client task the nodes build (a key of their
        :func:`~flwr_semcom.split.add_split_client` factories).
    rounds, batch_size, steps_per_message
        Passes over the training IDs; batch size; batches per message (S; 1 = exact
        sequential split learning).
    eval_batch_size, eval_batches_per_message
        Evaluation batches; batches per message (0 = the whole test set at once).
    seed
        Seed of the batch order, augmentation and channel noise streams.
    stage
        Ledger stage and seed stream of the training transfers (``"finetune"`` for Stage II,
        ``"pretrain"`` for paper 1's Stage I ``split``).
    task_params
        Task parameters sent in every message's config record (plain values).
    ledger
        Where transfers are recorded (a new :class:`CommLedger` by default).
    failure_policy
        What to do when a client fails (:class:`~flwr_semcom.reliability.FailurePolicy`).
    poll_interval, timeout, node_wait
        Seconds between pulls; to wait for a reply; to wait for the nodes to connect.
    drop_last, profile, device
        Drop a short last batch; ask the clients for load / compute / save times; where the
        server model runs.
    schedule, compensation
        Client-step schedule for S > 1 (``exact`` | ``replay``, docs/schedules.md); its factor.
    server_gradients
        Where the returned ∂L/∂uplink of a group are taken (docs/schedules.md): ``step`` (the
        default) at the weights of each batch's own step, ``group_end`` at the server's
        weights after the group's last step (one more decoder forward and backward per batch).
    on_round
        Default callback of :meth:`start` (called with each round's metrics row).
    """

    def __init__(
        self,
        server_task: ServerTask,
        *,
        client_task: str,
        rounds: int,
        batch_size: int,
        steps_per_message: int = 1,
        eval_batch_size: int = 256,
        eval_batches_per_message: int = 0,
        seed: int = 0,
        stage: str = "finetune",
        task_params: Mapping[str, str | int | float | bool] | None = None,
        ledger: CommLedger | None = None,
        failure_policy: FailurePolicy | None = None,
        poll_interval: float = 0.005,
        timeout: float = 600.0,
        node_wait: float = 120.0,
        drop_last: bool = False,
        profile: bool = False,
        device: str | torch.device = "cpu",
        on_round: RoundCallback | None = None,
        schedule: str = "exact",
        compensation: float = 0.0,
        server_gradients: str = "step",
    ) -> None:
        if not isinstance(server_task, ServerTask):
            raise TypeError(f"server_task must be a ServerTask, got {type(server_task).__name__}")
        check_arguments(
            ints={
                "rounds": (rounds, 1),
                "batch_size": (batch_size, 2),
                "steps_per_message": (steps_per_message, 1),
                "eval_batch_size": (eval_batch_size, 1),
                "eval_batches_per_message": (eval_batches_per_message, 0),
                "seed": (seed, 0),
            },
            positive={"poll_interval": poll_interval, "timeout": timeout, "node_wait": node_wait},
        )
        self.server = server_task
        self.client_task = str(client_task)
        self.task_params = dict(task_params or {})
        config_record(self.client_task, self.task_params)  # reserved keys / types: ValueError
        self.rounds = rounds
        self.batch_size = batch_size
        self.steps_per_message = steps_per_message
        self.eval_batch_size = eval_batch_size
        self.eval_per_message = eval_batches_per_message
        self.seed = seed
        self.stage = stage
        self.poll_interval = float(poll_interval)
        self.node_wait = float(node_wait)
        self.drop_last = bool(drop_last)
        self.profile = bool(profile)
        self.schedule = schedule_values(schedule, compensation)
        if server_gradients not in SERVER_GRADIENTS:
            raise ValueError(
                f"server_gradients must be one of {', '.join(SERVER_GRADIENTS)}, "
                f"got {server_gradients!r}"
            )
        self.server_gradients = server_gradients
        self.device = torch.device(device)
        self.server.model.to(self.device)
        self.policy = failure_policy or FailurePolicy()
        self.messenger = Messenger(
            ledger if ledger is not None else CommLedger(),
            policy=self.policy,
            poll_interval=self.poll_interval,
            timeout=float(timeout),
            kinds=KINDS,
        )
        self.on_round = on_round
        self.clients: list[ClientInfo] = []
        self.history: list[dict[str, Any]] = []
        self._pass: PassPlan | None = None
        self._eval: EvalPlan | None = None
        #: clients dropped for the rest of the current round (on_failure=skip): index → reason
        self.skipped: dict[int, str] = {}
        self._uplinks = Uplinks(self.server, self.device)

    def _config(self, server_round: int, **extra: Any) -> ConfigRecord:
        values: dict[str, Any] = {"stage": self.stage, "round": server_round}
        values.update(extra)
        values["profile"] = self.profile
        values.update(self.schedule)
        return config_record(self.client_task, self.task_params, **values)

    def _who(self, r: int) -> Callable[[int], str]:
        return lambda c: f"{self.clients[c].describe()} (round {r})"

    # ------------------------------------------------------------------ Strategy hooks
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Messages of the next exchange of the pass (gradients and/or plan), client order."""
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
            msgs.append(Message(content, info.node_id, TRAIN_STEP, group_id=str(server_round)))
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
        add_timing(p.times, replies)
        if j >= len(p.groups):  # the last exchange carries gradients only
            p.grads = None
            return None, None
        batches = p.groups[j]
        uplinks = self._uplinks.collect(replies, [b.size for b in batches], self._who(server_round))
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
            add_sums(sums, step.stats)
        if self.server_gradients == "group_end":  # every gradient at the group's final φ
            for t, batch in enumerate(batches):
                torch.manual_seed(
                    derive_seed(self.seed, "server", self.stage, server_round, batch.index)
                )
                at_end = self.server.input_gradients(
                    [uplinks[c][t] for c in range(len(self.clients))], batch
                )
                for c, g in enumerate(at_end):
                    grads[c][t] = {k: v.detach().cpu() for k, v in g.items()}
        p.times["server_s"] = p.times.get("server_s", 0.0) + time.perf_counter() - t0
        p.grads = grads
        add_sums(p.sums, sums)
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
                {"config": self._config(server_round), "plan": encode_plan(e.plans[c][e.chunk])}
            )
            msgs.append(Message(content, info.node_id, EVAL_FORWARD, group_id=str(server_round)))
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
        uplinks = self._uplinks.collect(
            list(replies), [b.size for b in batches], self._who(server_round)
        )
        sums: dict[str, float] = {}
        for t, batch in enumerate(batches):
            add_sums(sums, self.server.eval_step([u[t] for u in uplinks], batch))
        add_sums(e.sums, sums)
        return MetricRecord({k: float(v) for k, v in sums.items()})  # type: ignore[arg-type]

    def summary(self) -> None:
        """Log the configuration of the strategy."""
        log_summary(self)

    # ------------------------------------------------------------------ rounds
    def train_round(self, grid: Grid, server_round: int) -> dict[str, float]:
        """Run one training pass; return its metrics and timings."""
        self._pass = p = plan_pass(
            self.server.train_ids,
            batch_size=self.batch_size,
            steps_per_message=self.steps_per_message,
            seed=self.seed,
            round_=server_round,
            stage=self.stage,
            drop_last=self.drop_last,
            num_clients=len(self.clients),
        )
        self.server.start_round(server_round)
        t0 = time.perf_counter()
        while not p.done:
            msgs = list(self.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid))
            t1 = time.perf_counter()
            where = f"exchange {p.exchange}"
            replies = self._deliver(grid, msgs, self.stage, server_round, where)
            p.waits.append(time.perf_counter() - t1)
            self.aggregate_train(server_round, replies)
        self._pass = None
        return p.metrics(time.perf_counter() - t0)

    def evaluate_round(self, grid: Grid, server_round: int) -> dict[str, float]:
        """Evaluate the test IDs, then the task's ``val_ids`` (:mod:`strategies._split_eval`)."""
        return evaluate_round(self, grid, server_round)

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
        """Run rounds ``first_round..num_rounds`` (default ``rounds``): a training pass, then
        evaluation; return Flower's :class:`Result` (rows also go to :attr:`history` and to
        ``on_round(row)``). ``initial_arrays`` load into the server model; ``timeout`` overrides
        the reply timeout; ``train_config`` / ``evaluate_config`` are unused; ``first_round``
        > 1 continues a resumed run (server and clients restored from a checkpoint first)."""
        if train_config or evaluate_config:
            log(WARNING, "SplitTraining ignores train_config / evaluate_config")
        if timeout is not None:
            self.timeout = float(timeout)
        if initial_arrays is not None and len(initial_arrays) > 0:
            self.server.model.load_state_dict(initial_arrays.to_torch_state_dict())
        rounds = self.rounds if num_rounds is None else int(num_rounds)
        callback = on_round or self.on_round
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
            row["skipped"] = " ".join(self.clients[c].label for c in sorted(self.skipped))
            row["round_time_s"] = time.perf_counter() - t_round
            row["wall_time_s"] = time.perf_counter() - t_start
            finish_round(row, self.ledger, result, rounds)
            self.history.append(row)
            if evaluate_fn is not None:
                res = evaluate_fn(r, ArrayRecord(self.server.model.state_dict()))
                if res is not None:
                    result.evaluate_metrics_serverapp[r] = res
            if callback is not None:
                callback(row)
        result.arrays = ArrayRecord(self.server.model.state_dict())
        return result
