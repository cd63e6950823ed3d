"""Stage I placements: label-free pretraining on the devices, split, or at the server.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. III-A and Algorithm 1 ("No communication during
pre-training"). These strategies say *where* Stage I runs and count what it costs (ledger stage
``pretrain``); *what* is trained (models, losses, data) comes from the caller, so nothing here
names a paper (paper 1 wires them in :mod:`simulations.experiments._paper1_stages`):

- :class:`LocalPretrain` (``local``): every device runs a local pass (client action
  ``message_type``, e.g. paper 1's ``train.p1_pretrain_local``) on its own shard. Nothing
  but control messages crosses a link; with ``fedavg`` (D > 1 devices per modality) the
  models of a modality are FedAvg-ed every round (parameters up and down,
  :class:`~strategies.fedavg_modality.FedAvgModality`).
- :class:`ShardedSplit` (``split``, and Stage II): one split-runtime strategy
  (:class:`~strategies.split_training.SplitTraining`) per shard, then FedAvg per modality
  when there are several shards.
- :class:`ServerPretrain` (``server``): a :class:`CentralTrainer` trains at the server (on
  data the server holds), then each device downloads its role's part (parameters down).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from logging import INFO
from typing import Any, Protocol

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from flwr_semcom.accounting import CommLedger
from flwr_semcom.guard import NonFiniteError
from flwr_semcom.runtime.messaging import ClientInfo, record_transfer, send
from strategies.fedavg_modality import FedAvgModality, average_split_clients, split_modalities
from strategies.split_training import SplitTraining

__all__ = ["CentralTrainer", "LocalPretrain", "ServerPretrain", "ShardedSplit"]


class LocalPretrain(FedAvgModality):
    """Stage I ``local``: a local pass on every device per round, FedAvg per modality if asked.

    Parameters
    ----------
    clients
        Every device (role = modality).
    message_type
        The client action of one local pass (it answers ``"metrics"`` with ``num-examples``,
        ``"weights"`` when the config says ``upload``, or an ``"error"`` ConfigRecord with a
        ``message`` when the pass went non-finite).
    set_weights_action
        The client action that installs a model (config ``target`` = ``"local"``, record
        ``"weights"``); used by :meth:`finish` when ``fedavg``.
    config
        Typed values every pass message carries (e.g. ``{"method": "simclr"}``); ``upload``
        and ``round`` are added.
    fedavg
        Average the models of each modality after every round (D > 1 devices per modality).
    ledger
        Where transfers are counted (stage ``pretrain``).
    method
        Named in the error raised when a device reports a non-finite pass.
    poll_interval, timeout
        Reply polling, seconds.
    """

    def __init__(
        self,
        clients: Sequence[ClientInfo],
        *,
        message_type: str,
        set_weights_action: str,
        config: Mapping[str, Any],
        fedavg: bool,
        ledger: CommLedger,
        method: str = "",
        poll_interval: float = 0.005,
        timeout: float = 600.0,
    ) -> None:
        super().__init__(clients, message_type, stage="pretrain", ledger=ledger)
        self.config = dict(config)
        self.set_weights_action = set_weights_action
        self.method = method
        self.fedavg = bool(fedavg)
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.global_arrays = ArrayRecord()

    def base_config(self) -> ConfigRecord:
        """The config record of a pass message (``round`` is added per round)."""
        return ConfigRecord({**self.config, "upload": self.fedavg})

    def check_replies(self, server_round: int, replies: Sequence[Message]) -> None:
        """Raise :class:`NonFiniteError` if a device reported a non-finite loss or gradient."""
        for reply in replies:
            if "error" in reply.content:
                message = str(reply.content.config_records["error"]["message"])
                raise NonFiniteError(
                    self.method, "pretrain", server_round, f"on a device: {message}"
                )

    def train_round(self, grid: Grid, server_round: int) -> dict[str, float]:
        """One local pass on every device (+ FedAvg); returns loss and gradient norms."""
        t0 = time.perf_counter()
        msgs = list(
            self.configure_train(server_round, self.global_arrays, self.base_config(), grid)
        )
        replies = send(
            grid,
            msgs,
            self.clients,
            action=self.message_type,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )
        self.check_replies(server_round, replies)
        arrays, metrics = self.aggregate_train(server_round, replies)
        if arrays is not None:
            self.global_arrays = arrays
        out = {k: float(v) for k, v in (metrics or {}).items()}  # type: ignore[arg-type]
        out["train_time_s"] = time.perf_counter() - t0
        return out

    def finish(self, grid: Grid, server_round: int) -> None:
        """Send the last FedAvg average to every device (``fedavg`` only)."""
        if not self.fedavg or not len(self.global_arrays):
            return
        per_modality = split_modalities(self.global_arrays)
        msgs = []
        for c in self.clients:
            content = RecordDict(
                {"config": ConfigRecord({"target": "local"}), "weights": per_modality[c.role]}
            )
            record_transfer(  # the parameters (the one-word target is not counted)
                self.ledger,
                "down",
                RecordDict({"weights": per_modality[c.role]}),
                stage="pretrain",
                round_=server_round,
                client=c.label,
                kinds={"weights": "parameters"},
            )
            msgs.append(Message(content, c.node_id, self.set_weights_action))
        send(
            grid,
            msgs,
            self.clients,
            action=self.set_weights_action,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )


class ShardedSplit:
    """The split runtime over D shards, with FedAvg per modality after each round (D > 1).

    Parameters
    ----------
    shards
        One :class:`SplitTraining` per shard, in shard order (they may share a server model).
    clients
        Every device in partition order (``rgb-0..rgb-(D-1)``, then ``depth-0..``): shard k's
        strategy gets devices ``m·D + k`` of every modality m.
    stage
        ``"pretrain"`` or ``"finetune"`` (ledger stage of the FedAvg transfers).
    ledger
        Where the FedAvg transfers are counted (the shards count their own).
    num_examples
        ``{partition_id: samples}`` FedAvg weights.
    """

    def __init__(
        self,
        shards: Sequence[SplitTraining],
        clients: Sequence[ClientInfo],
        *,
        stage: str,
        ledger: CommLedger,
        num_examples: Mapping[int, float],
    ) -> None:
        self.dpm = len(shards)
        if self.dpm == 0 or len(clients) % self.dpm:
            raise ValueError(
                f"ShardedSplit: {len(shards)} shards for {len(clients)} clients; expected "
                "clients = modalities × shards"
            )
        modalities = len(clients) // self.dpm
        self.clients = list(clients)
        self.stage = stage
        self.ledger = ledger
        self.num_examples = dict(num_examples)
        self.strategies = list(shards)
        for k, s in enumerate(self.strategies):
            s.clients = [self.clients[m * self.dpm + k] for m in range(modalities)]
        first = self.strategies[0]
        self.client_task = first.client_task
        self.task_params = dict(first.task_params)
        self.poll_interval = first.poll_interval
        self.timeout = first.timeout

    def train_round(self, grid: Grid, server_round: int) -> dict[str, float]:
        """A pass of every shard, then FedAvg per modality; sample-weighted metrics.

        Server tasks with a ``norm_stats()`` method (per-round gradient norms) contribute
        their norms: the mean of the shards' ``*_mean`` and the max of their ``*_max``.
        """
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        total = 0.0
        norms: dict[str, list[float]] = {}
        for strategy in self.strategies:
            row = strategy.train_round(grid, server_round)  # starts its server task's round
            n = float(row.get("train_samples", 0.0))
            total += n
            for k in ("loss", "train_accuracy"):
                sums[k] = sums.get(k, 0.0) + float(row.get(k, math.nan)) * n
            stats: Mapping[str, float] = getattr(strategy.server, "norm_stats", dict)()
            for k, v in stats.items():
                norms.setdefault(k, []).append(v)
        out = {k: v / total if total else math.nan for k, v in sums.items()}
        for k, vs in norms.items():
            out[k] = max(vs) if k.endswith("_max") else sum(vs) / len(vs)
        if self.dpm > 1:
            average_split_clients(
                grid,
                self.clients,
                task=self.client_task,
                task_params=self.task_params,
                num_examples=self.num_examples,
                ledger=self.ledger,
                stage=self.stage,
                server_round=server_round,
                poll_interval=self.poll_interval,
                timeout=self.timeout,
            )
        out["train_samples"] = total
        out["train_time_s"] = time.perf_counter() - t0
        return out

    def evaluate_round(self, grid: Grid, server_round: int) -> dict[str, float]:
        """Test metrics through shard 0's devices (after FedAvg every shard is the same)."""
        return self.strategies[0].evaluate_round(grid, server_round)


class CentralTrainer(Protocol):
    """What :class:`ServerPretrain` drives: training at the server, and each role's result."""

    def train_round(self, server_round: int) -> dict[str, float]:
        """One pass; its metrics (``loss``, ``train_samples``, …)."""

    def payload(self, role: str) -> ArrayRecord:
        """What a device of ``role`` downloads after the last pass (e.g. its encoder)."""


class ServerPretrain:
    """Stage I ``server``: train at the server, then one download per device.

    Parameters
    ----------
    trainer
        The server-side training (paper 1: :class:`~flwr_semcom.paper1.central.ServerSSL`).
    download_action
        The client action that installs the download (record ``"encoder"``).
    download_config
        Typed values of the download message (e.g. ``{"source": "server"}``).
    """

    def __init__(
        self,
        trainer: CentralTrainer,
        *,
        download_action: str,
        download_config: Mapping[str, Any],
    ) -> None:
        self.trainer = trainer
        self.download_action = download_action
        self.download_config = dict(download_config)

    def train_round(self, server_round: int) -> dict[str, float]:
        """One training pass at the server; its metrics and ``train_time_s``."""
        t0 = time.perf_counter()
        out = dict(self.trainer.train_round(server_round))
        out["train_time_s"] = time.perf_counter() - t0
        return out

    def download(
        self,
        grid: Grid,
        clients: Sequence[ClientInfo],
        *,
        ledger: CommLedger,
        server_round: int,
        poll_interval: float = 0.005,
        timeout: float = 600.0,
    ) -> None:
        """Send each device its role's payload; counted as parameters down (stage
        ``pretrain``) plus the control record."""
        payloads = {role: self.trainer.payload(role) for role in sorted({c.role for c in clients})}
        msgs = []
        for c in clients:
            cfg = ConfigRecord(dict(self.download_config))
            content = RecordDict({"config": cfg, "encoder": payloads[c.role]})
            record_transfer(
                ledger,
                "down",
                content,
                stage="pretrain",
                round_=server_round,
                client=c.label,
                kinds={"encoder": "parameters"},
            )
            msgs.append(Message(content, c.node_id, self.download_action))
        send(
            grid,
            msgs,
            clients,
            action=self.download_action,
            poll_interval=poll_interval,
            timeout=timeout,
        )
        log(INFO, "server pretraining: %s downloaded to %d devices", "payloads", len(clients))
