"""FedAvg of a multi-task semantic link over devices with horizontal shards (paper 3).

Paper 3 (arXiv 2501.02006) trains its GAI model centrally; following the project's issue #10 we
train it, its GAI-w ablation and the separate single-task links with FedAvg (McMahan et al.
2017): every round the global link goes down to each of the ``D`` devices, each runs
``local_epochs`` on its shard (``train.mt_fit``) and uploads its link; the server averages them
weighted by ``num-examples`` (Flower's :class:`~flwr.serverapp.strategy.FedAvg`). After every
round the new global link goes down again for federated evaluation (``evaluate.mt_eval``): each
device sends its test shard over the AWGN channel at every evaluation SNR and returns additive
metric sums, which are combined exactly (not averaged) into per-task metrics.

Ledger (:class:`~flwr_semcom.accounting.CommLedger`): parameters down and up per device and
round (stage ``pretrain``: training the link before use, kind ``parameters``), the evaluation
download (stage ``eval``, kind ``parameters``), and the over-the-air test transmissions (stage
``eval``, kind ``symbols``: ``k`` complex channel uses per test image and SNR, 0 bytes: analog
symbols are not serialised). Symbols sent through the simulated channel during local training
never leave the device and are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flwr_semcom.accounting import CommLedger
from flwr_semcom.multitask import protocol as P
from flwr_semcom.multitask.tasks import Task
from flwr_semcom.split.protocol import record_nbytes

__all__ = ["FedAvgMultitask", "combine_eval"]


def combine_eval(
    replies: Iterable[RecordDict], tasks: Sequence[Task], snrs: Sequence[float]
) -> dict[float, dict[str, float]]:
    """Exact per-task metrics ``{snr: {task: metric}}`` from the devices' additive sums."""
    sums: dict[tuple[int, str, str], float] = {}
    for content in replies:
        for key, value in content.metric_records["metrics"].items():
            parsed = P.parse_metric_key(key)
            if parsed is not None:
                sums[parsed] = sums.get(parsed, 0.0) + P.as_number(value, key)
    out: dict[float, dict[str, float]] = {}
    for i, snr in enumerate(snrs):
        out[float(snr)] = {}
        for task in tasks:
            stats = {s: v for (j, t, s), v in sums.items() if j == i and t == task.name}
            if not stats:
                raise RuntimeError(f"no evaluation sums for task {task.name} at {snr:g} dB")
            out[float(snr)][task.name] = task.finalize(stats)
    return out


class FedAvgMultitask(FedAvg):
    """FedAvg for one (method, bandwidth ratio) link, with ledger and per-round history.

    Parameters
    ----------
    method, ratio
        Which link the devices build (``gai``, ``gai_w``, ``separate``) and its ``R``.
    tasks
        The link's tasks (for combining evaluation sums).
    snrs
        Evaluation SNRs in dB (``channel.snr_db``), in the order the devices use.
    num_devices
        ``D``: every round waits for and uses all ``D`` devices.
    ledger
        Where transfers are counted.
    on_round
        Called with each history row (e.g. to write results and print progress).
    label
        Prefix of the ledger's client names and of the progress lines.
    num_rounds
        Rounds the caller will run (shown in the progress lines).
    """

    def __init__(
        self,
        method: str,
        ratio: float,
        tasks: Sequence[Task],
        snrs: Sequence[float],
        num_devices: int,
        ledger: CommLedger | None = None,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        label: str = "",
        num_rounds: int = 0,
    ) -> None:
        super().__init__(
            min_train_nodes=num_devices,
            min_evaluate_nodes=num_devices,
            min_available_nodes=num_devices,
        )
        self.method = method
        self.ratio = float(ratio)
        self.tasks = list(tasks)
        self.snrs = [float(s) for s in snrs]
        self.ledger = CommLedger() if ledger is None else ledger
        self.on_round = on_round
        self.label = label or f"{method}/R={ratio:g}"
        self.num_rounds = num_rounds  # for the progress lines only
        self.history: list[dict[str, Any]] = []
        self._train: dict[int, dict[str, float]] = {}
        self._t0 = time.perf_counter()

    def _client(self, node_id: int) -> str:
        return f"{self.label}/node{node_id}"

    def _retype(
        self, messages: Iterable[Message], message_type: str, stage: str, rnd: int
    ) -> list[Message]:
        out = []
        for msg in messages:
            content = msg.content
            content.config_records[self.configrecord_key]["method"] = self.method
            content.config_records[self.configrecord_key]["ratio"] = self.ratio
            dst = msg.metadata.dst_node_id
            self.ledger.record(
                direction="down",
                stage=stage,
                kind="parameters",
                nbytes=record_nbytes(content.array_records[self.arrayrecord_key]),
                round=rnd,
                client=self._client(dst),
            )
            out.append(Message(content, dst, message_type))
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages, typed ``train.mt_fit`` and counted as downloads."""
        msgs = super().configure_train(server_round, arrays, config, grid)
        return self._retype(msgs, P.FIT, "pretrain", server_round)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Fail on any error reply; count uploads; keep the mean losses; average (FedAvg)."""
        replies = list(replies)
        errors = [r for r in replies if r.has_error()]
        if errors or not replies:
            reason = "; ".join(str(r.error.reason) for r in errors) or "no replies"
            raise RuntimeError(f"multitask {self.label} round {server_round} failed: {reason}")
        for rep in replies:
            self.ledger.record(
                direction="up",
                stage="pretrain",
                kind="parameters",
                nbytes=record_nbytes(rep.content.array_records[self.arrayrecord_key]),
                round=server_round,
                client=self._client(rep.metadata.src_node_id),
            )
        arrays, metrics = super().aggregate_train(server_round, replies)
        self._train[server_round] = {k: float(v) for k, v in (metrics or {}).items()}  # type: ignore[arg-type]
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's evaluation messages, typed ``evaluate.mt_eval`` and counted."""
        msgs = super().configure_evaluate(server_round, arrays, config, grid)
        return self._retype(msgs, P.EVAL, "eval", server_round)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Combine the devices' sums into exact per-task metrics; one history row per SNR."""
        replies = list(replies)
        errors = [r for r in replies if r.has_error()]
        if errors or not replies:
            reason = "; ".join(str(r.error.reason) for r in errors) or "no replies"
            raise RuntimeError(f"multitask {self.label} evaluation {server_round}: {reason}")
        for rep in replies:
            metrics_in = rep.content.metric_records["metrics"]
            uses = int(P.as_number(metrics_in["channel-uses"], "channel-uses"))
            for _ in self.snrs:
                self.ledger.record(
                    direction="up",
                    stage="eval",
                    kind="symbols",
                    nbytes=0,
                    channel_uses=uses,
                    round=server_round,
                    client=self._client(rep.metadata.src_node_id),
                )
        metrics = combine_eval([r.content for r in replies], self.tasks, self.snrs)
        n = sum(
            int(P.as_number(r.content.metric_records["metrics"]["num-examples"], "num-examples"))
            for r in replies
        )
        clients = tuple(self._client(r.metadata.src_node_id) for r in replies)
        train = self._train.get(server_round, {})
        up = self.ledger.total(stage="pretrain", direction="up", client=clients)
        down = self.ledger.total(stage="pretrain", direction="down", client=clients)
        flat: dict[str, int | float | list[int] | list[float]] = {}
        for snr, per_task in metrics.items():
            row: dict[str, Any] = {
                "round": server_round,
                "method": self.method,
                "ratio": self.ratio,
                "snr_db": snr,
                **{f"{t.name}_{t.metric}": per_task[t.name] for t in self.tasks},
                "train_loss": train.get("loss", float("nan")),
                **{
                    f"train_loss_{t.name}": train.get(f"loss-{t.name}", float("nan"))
                    for t in self.tasks
                },
                "test_images": n,
                "bytes_up": up,
                "bytes_down": down,
                "elapsed_s": time.perf_counter() - self._t0,
            }
            self.history.append(row)
            if self.on_round is not None:
                self.on_round(row)
            for t in self.tasks:
                flat[f"{snr:g}dB/{t.name}_{t.metric}"] = per_task[t.name]
        parts = " | ".join(
            f"{snr:g} dB: " + " ".join(f"{t.metric} {metrics[snr][t.name]:.4f}" for t in self.tasks)
            for snr in metrics
        )
        log(
            INFO,
            "[multitask] %s round %d/%s: loss %.4f | %s | params up %.2f MB down %.2f MB | %.0f s",
            self.label,
            server_round,
            self.num_rounds,
            train.get("loss", float("nan")),
            parts,
            up / 1e6,
            down / 1e6,
            time.perf_counter() - self._t0,
        )
        return MetricRecord(flat)
