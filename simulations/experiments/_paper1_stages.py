"""Paper 1's two stages for one method, driven through the typed strategies.

Paper 1 (Zhao et al., arXiv 2503.13940), Algorithm 1: Stage I (label-free pretraining, Sec.
III-A) in the method's placement, then Stage II (split fine-tuning, Sec. III-B). This module
is the edge where the composed config becomes typed objects: the strategies of
:mod:`strategies.pretrain` / :mod:`strategies.split_training` and paper 1's tasks
(:mod:`flwr_semcom.paper1`). Messages carry typed values only (``method``, ``source``,
``samples``); the clients compose the same config from their run config.

:class:`Paper1Run` holds what the methods of one run share (devices, sample IDs, results
log, one ledger per method) and runs one method with :meth:`Paper1Run.run_method`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from logging import ERROR
from typing import Any

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from omegaconf import DictConfig

from flwr_semcom.accounting import CommLedger
from flwr_semcom.config import resolve_device
from flwr_semcom.paper1 import client as p1_client
from flwr_semcom.paper1.central import ServerSSL
from flwr_semcom.paper1.data import StageIds, num_devices, stage_ids
from flwr_semcom.paper1.models import decur_loss
from flwr_semcom.paper1.rgbd import load_modality
from flwr_semcom.paper1.settings import METHOD_LABELS, resolve_placement, ssl_settings
from flwr_semcom.paper1.stability import NonFiniteError
from flwr_semcom.paper1.stage1 import PRETRAIN_CLIENT_TASK, DeCURServer
from flwr_semcom.paper1.stage2 import FINETUNE_CLIENT_TASK, finetune_server
from flwr_semcom.runtime.messaging import ClientInfo, record_transfer, send
from flwr_semcom.split import ServerTask
from flwr_semcom.split.settings import split_kwargs
from simulations.experiments._paper1_outputs import RunLog
from strategies.pretrain import LocalPretrain, ServerPretrain, ShardedSplit
from strategies.split_training import SplitTraining

__all__ = ["Paper1Run", "split_strategy"]


def split_strategy(
    cfg: DictConfig,
    server_task: ServerTask,
    *,
    client_task: str,
    stage: str,
    ledger: CommLedger,
    rounds: int,
    batch_size: int,
    steps_per_message: int,
    task_params: Mapping[str, Any] | None = None,
) -> SplitTraining:
    """A :class:`SplitTraining` for paper 1: the schedule given, limits and policy from ``cfg``."""
    kwargs = split_kwargs(cfg)
    kwargs.update(
        stage=stage,
        ledger=ledger,
        rounds=rounds,
        batch_size=batch_size,
        steps_per_message=steps_per_message,
        task_params=dict(task_params or {}),
    )
    return SplitTraining(server_task, client_task=client_task, **kwargs)


class Paper1Run:
    """What the methods of one run share, and the two stages of one method.

    Parameters
    ----------
    grid
        Flower's grid.
    cfg
        The composed config of the run (the edge: read here, nowhere below).
    log_
        Where metric rows go.
    """

    def __init__(self, grid: Grid, cfg: DictConfig, log_: RunLog) -> None:
        self.grid = grid
        self.cfg = cfg
        self.log = log_
        self.ids: StageIds = stage_ids(cfg)
        self.ledgers: dict[str, CommLedger] = {}
        self.methods: dict[str, dict[str, Any]] = {}
        s = cfg.strategy
        self.poll_interval = float(s.poll_interval)
        self.timeout = float(s.timeout)
        self.precise_bn = int(cfg.get("finetune", {}).get("precise_bn_samples", 0))
        self.modalities = [str(m) for m in cfg.data.modalities]
        self.dpm = int(cfg.data.devices_per_modality)
        probe = split_strategy(
            cfg,
            finetune_server(cfg, clients=num_devices(cfg)),
            client_task=FINETUNE_CLIENT_TASK,
            stage="finetune",
            ledger=CommLedger(),
            rounds=int(s.rounds),
            batch_size=int(s.batch_size),
            steps_per_message=int(s.steps_per_message),
        )
        self.clients: list[ClientInfo] = probe.discover(grid)
        self._probe = probe
        self._t0: dict[str, float] = {}
        dpm = self.dpm
        self.pretrain_examples = {
            c.partition_id: float(self.ids.shards[c.partition_id % dpm].shape[0])
            for c in self.clients
        }
        self.finetune_examples = {
            c.partition_id: float(max(1, self.ids.labelled_shards[c.partition_id % dpm].shape[0]))
            for c in self.clients
        }

    # ------------------------------------------------------------------ messages
    def broadcast(
        self,
        action: str,
        config: Mapping[str, Any],
        ledger: CommLedger | None,
        stage: str,
        round_: int = 0,
    ) -> list[Message]:
        """Send every device the same config record (counted as control down)."""
        msgs = []
        for c in self.clients:
            content = RecordDict({"config": ConfigRecord(dict(config))})
            if ledger is not None:
                record_transfer(ledger, "down", content, stage=stage, round_=round_, client=c.label)
            msgs.append(Message(content, c.node_id, action))
        return send(
            self.grid,
            msgs,
            self.clients,
            action=action,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )

    # ------------------------------------------------------------------ one method
    def run_method(self, method: str) -> None:
        """Stage I then Stage II of ``method``; a non-finite value marks it ``diverged``."""
        if self.run_stage1(method):
            self.run_stage2(method)

    def run_stage1(self, method: str) -> bool:
        """Reset the devices, run Stage I of ``method`` and install the Stage II encoders;
        False when it diverged (no Stage II)."""
        cfg = self.cfg
        label = METHOD_LABELS[method]
        placement = resolve_placement(method, str(cfg.pretrain.placement))
        ledger = self.ledgers.setdefault(label, CommLedger())
        info: dict[str, Any] = {"method": method, "placement": placement, "status": "ok"}
        self.methods[label] = info
        t0 = time.perf_counter()
        self._t0[label] = t0
        self.broadcast(p1_client.RESET, {}, None, "pretrain")
        rounds1 = int(cfg.pretrain.rounds) if method != "none" else 0
        info["pretrain_rounds"] = rounds1
        try:
            source = self.stage1(label, method, placement, ledger, rounds1)
            info["stage1_time_s"] = time.perf_counter() - t0
            if source is not None:
                self.broadcast(p1_client.INIT_FINETUNE, {"source": source}, ledger, "finetune")
        except NonFiniteError as err:
            self._diverged(label, err)
            return False
        return True

    def run_stage2(self, method: str) -> None:
        """Stage II of ``method`` from the encoders the devices hold now."""
        label = METHOD_LABELS[method]
        info = self.methods[label]
        t1 = time.perf_counter()
        try:
            self.stage2(label, self.ledgers[label])
            info["stage2_time_s"] = time.perf_counter() - t1
        except NonFiniteError as err:
            self._diverged(label, err)
            return
        t0 = self._t0.get(label, t1 - float(info.get("stage1_time_s", 0.0)))
        info["wall_time_s"] = time.perf_counter() - t0

    def _diverged(self, label: str, err: NonFiniteError) -> None:
        info = self.methods[label]
        info["status"] = "diverged"
        info["error"] = str(err)
        log(ERROR, "[%s] %s", label, err)
        t0 = self._t0.get(label, time.perf_counter() - float(info.get("stage1_time_s", 0.0)))
        info["wall_time_s"] = time.perf_counter() - t0

    def finetune_states(self) -> dict[int, Any]:
        """Every device's Stage II records (``split.<finetune task>.*``) as plain data, by
        partition (not in the ledger): what Stage II starts from."""
        return self._probe.fetch_client_checkpoint(self.grid)

    def restore_finetune(self, states: dict[int, Any]) -> None:
        """Reset the devices and install :meth:`finetune_states`' records (not in the ledger)."""
        self.broadcast(p1_client.RESET, {}, None, "pretrain")
        self._probe.restore_clients(self.grid, states)

    def stage1(
        self, label: str, method: str, placement: str, ledger: CommLedger, rounds: int
    ) -> str | None:
        """Run Stage I; return the ``source`` of the Stage II encoders (None: already sent)."""
        if method == "none" or rounds == 0:
            return "random"
        if placement == "local":
            local = LocalPretrain(
                self.clients,
                message_type=p1_client.PRETRAIN_LOCAL,
                set_weights_action=p1_client.SET_WEIGHTS,
                config={"method": method},
                fedavg=self.dpm > 1,
                ledger=ledger,
                method=method,
                poll_interval=self.poll_interval,
                timeout=self.timeout,
            )
            for r in range(1, rounds + 1):
                t = time.perf_counter()
                self.log.row(
                    label, "pretrain", r, rounds, local.train_round(self.grid, r), ledger, t
                )
            local.finish(self.grid, rounds)
            return "local"
        if placement == "split":
            runner = self.sharded(self.stage1_shards(method, ledger), "pretrain", ledger)
            for r in range(1, rounds + 1):
                t = time.perf_counter()
                self.log.row(
                    label, "pretrain", r, rounds, runner.train_round(self.grid, r), ledger, t
                )
            return "split"
        data = {m: load_modality(self.cfg, m) for m in self.modalities}
        device = torch.device(resolve_device(str(self.cfg.device)))
        trainer = ServerSSL(
            ssl_settings(self.cfg), data, self.ids.train, method=method, device=device
        )
        server = ServerPretrain(
            trainer, download_action=p1_client.INIT_FINETUNE, download_config={"source": "server"}
        )
        for r in range(1, rounds + 1):
            t = time.perf_counter()
            self.log.row(label, "pretrain", r, rounds, server.train_round(r), ledger, t)
        server.download(
            self.grid,
            self.clients,
            ledger=ledger,
            server_round=rounds,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )
        return None

    def stage1_shards(self, method: str, ledger: CommLedger) -> list[SplitTraining]:
        """Stage I ``split``: one DeCUR server per shard, the ``pretrain`` schedule."""
        pre = self.cfg.pretrain
        m = len(self.modalities)
        loss = decur_loss(ssl_settings(self.cfg))
        return [
            split_strategy(
                self.cfg,
                DeCURServer(loss, train_ids=self.ids.shards[k], num_clients=m, method=method),
                client_task=PRETRAIN_CLIENT_TASK,
                stage="pretrain",
                ledger=ledger,
                rounds=max(1, int(pre.rounds)),
                batch_size=int(pre.batch_size),
                steps_per_message=int(pre.steps_per_message),
                task_params={"method": method},
            )
            for k in range(self.dpm)
        ]

    def sharded(
        self, shards: Sequence[SplitTraining], stage: str, ledger: CommLedger
    ) -> ShardedSplit:
        """The shards' strategies over this run's devices (FedAvg per modality when D > 1)."""
        return ShardedSplit(
            shards,
            self.clients,
            stage=stage,
            ledger=ledger,
            num_examples=self.pretrain_examples if stage == "pretrain" else self.finetune_examples,
        )

    def stage2(self, label: str, ledger: CommLedger) -> None:
        """Stage II: split fine-tuning on the labelled scenes, evaluation after every round."""
        cfg = self.cfg
        m = len(self.modalities)
        first = finetune_server(cfg, method=label, train_ids=self.ids.labelled_shards[0], clients=m)
        tasks = [first] + [
            finetune_server(
                cfg,
                method=label,
                train_ids=self.ids.labelled_shards[k],
                decoder=first.model,  # type: ignore[arg-type]
                optimizer=first.optimizer,
                clients=m,
            )
            for k in range(1, self.dpm)
        ]
        s = cfg.strategy
        shards = [
            split_strategy(
                cfg,
                task,
                client_task=FINETUNE_CLIENT_TASK,
                stage="finetune",
                ledger=ledger,
                rounds=int(s.rounds),
                batch_size=int(s.batch_size),
                steps_per_message=int(s.steps_per_message),
            )
            for task in tasks
        ]
        runner = self.sharded(shards, "finetune", ledger)
        rounds = int(s.rounds)
        for r in range(1, rounds + 1):
            t = time.perf_counter()
            metrics = runner.train_round(self.grid, r)
            if self.precise_bn > 0:
                self.broadcast(
                    p1_client.PRECISE_BN, {"samples": self.precise_bn}, ledger, "eval", round_=r
                )
            metrics.update(runner.evaluate_round(self.grid, r))
            self.log.row(label, "finetune", r, rounds, metrics, ledger, t)
