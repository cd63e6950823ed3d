"""Stage I strategies of paper 1: label-free pretraining in three placements.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. III-A and Algorithm 1 ("No communication during
pre-training"). We implement where Stage I runs and count what it costs (ledger stage
``pretrain``), see :mod:`flwr_semcom.paper1.settings` for the valid method/placement pairs:

- :class:`LocalPretrain` (``local``): every device runs passes of its method's intra-modal
  loss on its own shard (``train.p1_pretrain_local``). Nothing but control messages crosses a
  link; with D > 1 devices per modality the encoders of a modality are FedAvg-ed every round
  (parameters up and down, :class:`~strategies.fedavg_modality.FedAvgModality`).
- :class:`ShardedSplit` (``split``, and Stage II): the split runtime
  (:class:`~strategies.split_training.SplitTraining`) with paper 1's tasks, one runtime
  strategy per shard (devices ``rgb-k``/``depth-k`` and the shard's IDs), then FedAvg per
  modality when D > 1. Stage I ``split`` sends projector outputs up and the gradients of
  the cross-modal term down.
- :class:`ServerPretrain` (``server``): the server pretrains both encoders on the unlabelled
  paired training scenes (DeCUR: full loss; baselines: their loss per modality), then
  downloads each device's encoder (parameters down; ``train.p1_init_finetune``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from logging import INFO
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from omegaconf import DictConfig, OmegaConf

from flwr_semcom.accounting import CommLedger
from flwr_semcom.config import resolve_device
from flwr_semcom.models.transmitter import DeviceTransmitter
from flwr_semcom.paper1.client import INIT_FINETUNE, PRETRAIN_LOCAL, SET_WEIGHTS
from flwr_semcom.paper1.models import build_ssl_transmitter, encoder_state, make_pretrain_sgd
from flwr_semcom.paper1.pretrain import ssl_pass
from flwr_semcom.paper1.stability import NonFiniteError
from flwr_semcom.split.exchange import ClientInfo, exchange
from flwr_semcom.split.protocol import record_nbytes
from flwr_semcom.split.rgbd import load_modality
from flwr_semcom.split.tasks import ServerTask
from strategies.fedavg_modality import FedAvgModality, average_split_clients, split_modalities
from strategies.split_training import SplitTraining

__all__ = [
    "LocalPretrain",
    "ServerPretrain",
    "ShardedSplit",
    "module_record_from_state",
    "stage1_cfg",
]


def stage1_cfg(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the split schedule keys (batch size, S) taken from ``pretrain``."""
    out = cfg.copy()
    OmegaConf.set_struct(out, False)
    out.strategy.batch_size = int(cfg.pretrain.batch_size)
    out.strategy.steps_per_message = int(cfg.pretrain.steps_per_message)
    out.strategy.rounds = max(1, int(cfg.pretrain.rounds))
    return out


class LocalPretrain(FedAvgModality):
    """Stage I ``local``: intra-modal passes on the devices, FedAvg per modality if D > 1.

    Parameters
    ----------
    cfg
        The composed config of the method (``pretrain.method`` set).
    clients
        Every device (role = modality).
    experiment, overrides
        What the clients compose their config from (``pretrain.method`` in ``overrides``).
    ledger
        Ledger of the method (stage ``pretrain``).
    poll_interval, timeout
        Reply polling (``strategy.poll_interval`` / ``strategy.timeout``).
    """

    def __init__(
        self,
        cfg: DictConfig,
        clients: Sequence[ClientInfo],
        *,
        experiment: str,
        overrides: str,
        ledger: CommLedger,
        poll_interval: float = 0.005,
        timeout: float = 600.0,
    ) -> None:
        super().__init__(clients, PRETRAIN_LOCAL, stage="pretrain", ledger=ledger)
        self.cfg = cfg
        self.method = str(cfg.pretrain.method)
        self.experiment = experiment
        self.overrides = overrides
        self.fedavg = int(cfg.data.devices_per_modality) > 1
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.global_arrays = ArrayRecord()

    def base_config(self) -> ConfigRecord:
        return ConfigRecord(
            {"experiment": self.experiment, "overrides": self.overrides, "upload": self.fedavg}
        )

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
        replies = exchange(
            grid,
            msgs,
            self.clients,
            action=PRETRAIN_LOCAL,
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
        """Send the last FedAvg average to every device (D > 1 only)."""
        if not self.fedavg or not len(self.global_arrays):
            return
        per_modality = split_modalities(self.global_arrays)
        msgs = []
        for c in self.clients:
            self.ledger.record(
                direction="down",
                stage="pretrain",
                kind="parameters",
                nbytes=record_nbytes(per_modality[c.role]),
                round=server_round,
                client=self.label(c),
            )
            content = RecordDict(
                {"config": ConfigRecord({"target": "local"}), "weights": per_modality[c.role]}
            )
            msgs.append(Message(content, c.node_id, SET_WEIGHTS))
        exchange(
            grid,
            msgs,
            self.clients,
            action=SET_WEIGHTS,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )


class ShardedSplit:
    """The split runtime over D shards, with FedAvg per modality after each round (D > 1).

    Parameters
    ----------
    cfg
        The composed config (its ``strategy`` keys drive the schedule).
    clients
        Every device in partition order (``rgb-0..rgb-(D-1)``, then ``depth-0..``).
    server_tasks
        One server task per shard (they may share a decoder).
    experiment, overrides
        What the clients compose their config from.
    stage
        ``"pretrain"`` or ``"finetune"`` (ledger and seed streams).
    ledger
        Ledger of the method.
    num_examples
        ``{partition_id: samples}`` FedAvg weights.
    """

    def __init__(
        self,
        cfg: DictConfig,
        clients: Sequence[ClientInfo],
        server_tasks: Sequence[ServerTask],
        *,
        experiment: str,
        overrides: str,
        stage: str,
        ledger: CommLedger,
        num_examples: dict[int, float],
    ) -> None:
        self.dpm = int(cfg.data.devices_per_modality)
        modalities = len(cfg.data.modalities)
        if len(server_tasks) != self.dpm or len(clients) != modalities * self.dpm:
            raise ValueError(
                f"ShardedSplit: {len(server_tasks)} server tasks and {len(clients)} clients for "
                f"{modalities} modalities × {self.dpm} devices"
            )
        self.clients = list(clients)
        self.stage = stage
        self.ledger = ledger
        self.experiment = experiment
        self.overrides = overrides
        self.num_examples = num_examples
        self.tasks = list(server_tasks)
        self.client_task = self.tasks[0].client_task
        self.strategies = []
        for k, task in enumerate(self.tasks):
            s = SplitTraining(
                cfg,
                experiment=experiment,
                overrides=overrides,
                stage=stage,
                server_task=task,
                ledger=ledger,
            )
            s.clients = [self.clients[m * self.dpm + k] for m in range(modalities)]
            self.strategies.append(s)
        self.poll_interval = self.strategies[0].poll_interval
        self.timeout = self.strategies[0].timeout

    def train_round(self, grid: Grid, server_round: int) -> dict[str, float]:
        """A pass of every shard, then FedAvg per modality; sample-weighted metrics."""
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        total = 0.0
        norms: dict[str, list[float]] = {}
        for task, strategy in zip(self.tasks, self.strategies):
            task.start_round(server_round)  # type: ignore[attr-defined]
            row = strategy.train_round(grid, server_round)
            n = float(row.get("train_samples", 0.0))
            total += n
            for k in ("loss", "train_accuracy"):
                sums[k] = sums.get(k, 0.0) + float(row.get(k, math.nan)) * n
            for k, v in task.norm_stats().items():  # type: ignore[attr-defined]
                norms.setdefault(k, []).append(v)
        out = {k: v / total if total else math.nan for k, v in sums.items()}
        for k, vs in norms.items():
            out[k] = max(vs) if k.endswith("_max") else sum(vs) / len(vs)
        if self.dpm > 1:
            average_split_clients(
                grid,
                self.clients,
                task=self.client_task,
                experiment=self.experiment,
                overrides=self.overrides,
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


class ServerPretrain:
    """Stage I ``server``: pretraining at the server, then one encoder download per device.

    The server builds every modality's transmitter with the devices' initial weights
    (:func:`~flwr_semcom.paper1.models.build_ssl_transmitter`) and runs
    :func:`~flwr_semcom.paper1.pretrain.ssl_pass` on all training scenes (label-free).
    """

    def __init__(self, cfg: DictConfig, train_ids: torch.Tensor) -> None:
        self.cfg = cfg
        self.method = str(cfg.pretrain.method)
        self.device = torch.device(resolve_device(str(cfg.device)))
        self.modalities = [str(m) for m in cfg.data.modalities]
        self.models: dict[str, DeviceTransmitter] = {
            m: build_ssl_transmitter(cfg, m).to(self.device) for m in self.modalities
        }
        self.data = {m: load_modality(cfg, m).to(self.device) for m in self.modalities}
        params = [p for m in self.modalities for p in self.models[m].parameters()]
        self.optimizer = make_pretrain_sgd(params, cfg)
        self.train_ids = train_ids

    def train_round(self, server_round: int) -> dict[str, float]:
        t0 = time.perf_counter()
        stats = ssl_pass(
            self.models,
            self.data,
            self.train_ids,
            self.cfg,
            method=self.method,
            round_=server_round,
            optimizer=self.optimizer,
            stage_name="pretrain-server",
            who="server",
        )
        return {
            "loss": stats.loss,
            "grad_norm_mean": stats.grad_norm_mean,
            "grad_norm_max": stats.grad_norm_max,
            "train_samples": float(stats.samples),
            "train_time_s": time.perf_counter() - t0,
        }

    def download(
        self,
        grid: Grid,
        clients: Sequence[ClientInfo],
        *,
        experiment: str,
        overrides: str,
        ledger: CommLedger,
        server_round: int,
        poll_interval: float = 0.005,
        timeout: float = 600.0,
    ) -> None:
        """Send each device its modality's encoder; it becomes the Stage II start model.

        ``experiment`` / ``overrides`` are Stage II's. Counted as parameters down (stage
        ``pretrain``) plus the control record.
        """
        encoders = {
            m: module_record_from_state(encoder_state(self.models[m].state_dict()))
            for m in self.modalities
        }
        msgs = []
        for c in clients:
            cfg = ConfigRecord(
                {"experiment": experiment, "overrides": overrides, "source": "server"}
            )
            label = f"{c.partition_id}:{c.role}"
            ledger.record(
                direction="down",
                stage="pretrain",
                kind="parameters",
                nbytes=record_nbytes(encoders[c.role]),
                round=server_round,
                client=label,
            )
            ledger.record(
                direction="down",
                stage="pretrain",
                kind="control",
                nbytes=record_nbytes(cfg),
                round=server_round,
                client=label,
            )
            content = RecordDict({"config": cfg, "encoder": encoders[c.role]})
            msgs.append(Message(content, c.node_id, INIT_FINETUNE))
        exchange(
            grid, msgs, clients, action=INIT_FINETUNE, poll_interval=poll_interval, timeout=timeout
        )
        log(INFO, "server pretraining: encoders downloaded to %d devices", len(clients))


def module_record_from_state(state: dict[str, Any]) -> ArrayRecord:
    """A state dict as an ArrayRecord (as :func:`flwr_semcom.split.state.module_record`)."""
    from flwr.app import Array

    rec = ArrayRecord()
    for name, tensor in state.items():
        rec[name] = Array(tensor.detach().cpu().contiguous())
    return rec
