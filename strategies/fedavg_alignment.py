"""FedAvg alignment: the baseline SLF is compared with (paper 2, Sec. III-A).

Choi et al., arXiv 2310.09394, Sec. III-A (and their ref. [16]): a misaligned pair can also be
re-aligned by federated averaging of the *whole* transceivers, at the price of exchanging
every parameter every round, and with little gain because the two nodes' data and channels
are extremely non-IID. The same pair, links and ledger as SLF:

- round 0: both nodes upload their pre-trained transceiver (``query.slf_model``); the server
  averages them into the first global model;
- rounds 1..R (Flower's :class:`~flwr.serverapp.strategy.FedAvg` loop): the global model is
  downloaded to both nodes, each trains ``local_steps`` on its own data through the i-j DMC
  (``train.slf_fedavg``) and uploads it; the server averages (weighted by ``num-examples``);
  after each round the global model is scored on i's test images (``evaluate.slf_fedavg``,
  evaluation only, not counted);
- finally the global model is downloaded to both (``train.slf_install``), and the aligned
  transmission of SLF step 4 scores it from i to j.

Non-finite guard (issue #9): an uploaded transceiver holding NaN or inf is dropped from the
average with a warning naming the node and round; a round with no finite upload fails with
:class:`~flwr_semcom.guard.NonFiniteError` (:func:`flwr_semcom.guard.finite_replies`).

Every model transfer is counted (stage ``align``). The recovery time applies the SLF model per
round with both clients' links and compute in parallel: one upload (round 0), per round one
download + the slower client's fine-tuning compute + one upload, and the final download.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from logging import WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flwr_semcom.accounting import CommLedger, record_nbytes
from flwr_semcom.alignment import messages as P
from flwr_semcom.alignment.recovery import RecoveryModel
from flwr_semcom.guard import NonFiniteError, finite_replies, nonfinite_summary
from strategies.slf import Link, aligned_transmission, exchange

__all__ = ["FedAvgAlignment", "FedAvgAlignmentResult"]


@dataclass(frozen=True)
class FedAvgAlignmentResult:
    """Outcome of FedAvg alignment; ``history`` has one dict per round (cumulative bytes)."""

    rounds: int
    model_params: int
    download_bytes: int
    upload_bytes: int
    flops: float
    recovery_time_s: float
    wall_time_s: float
    mse: float
    accuracy: float
    num_examples: int
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FedAvgAlignment(FedAvg):
    """FedAvg over the two transceivers of a misaligned pair, with SLF's accounting.

    Parameters
    ----------
    link
        The pair (i, j), its DMC crossover and i's data.
    recovery
        The recovery-time model (same values as SLF).
    ledger
        Where transfers are counted.
    timeout
        Seconds to wait for each reply.
    """

    def __init__(
        self,
        link: Link,
        recovery: RecoveryModel,
        *,
        ledger: CommLedger | None = None,
        timeout: float = 3600.0,
    ) -> None:
        super().__init__(min_train_nodes=2, min_evaluate_nodes=1, min_available_nodes=2)
        self.link = link
        self.recovery = recovery
        self.ledger = CommLedger() if ledger is None else ledger
        self.timeout = timeout
        self.history: list[dict[str, float]] = []
        self._round_flops: dict[int, float] = {}
        self._model_bytes = 0
        self._model_params = 0

    def _nodes(self) -> list[tuple[str, int]]:
        return [("transmitter", self.link.transmitter), ("receiver", self.link.receiver)]

    def _role(self, node_id: int) -> str:
        return "transmitter" if node_id == self.link.transmitter else "receiver"

    def _count(self, direction: str, kind: str, arrays: ArrayRecord, rnd: int, role: str) -> None:
        self.ledger.record(
            direction=direction,
            stage="align",
            kind=kind,
            nbytes=record_nbytes(arrays),
            round=rnd,
            client=self.link.client(role),
        )

    def initial_arrays(self, grid: Grid) -> ArrayRecord:
        """Round 0: both nodes upload their transceiver; return the parameter average."""
        clients = [self.link.node(role) for role, _ in self._nodes()]
        replies = exchange(grid, clients, P.MODEL, self.timeout)
        states = []
        dropped = []
        for (role, node), content in zip(self._nodes(), replies):
            self._count("up", "model", P.arrays_of(content), 0, role)
            bad = nonfinite_summary(P.arrays_of(content))
            if bad is not None:
                log(
                    WARNING,
                    "non-finite transceiver from node %s (%s), round 0: %s; dropped "
                    "from the average",
                    node,
                    role,
                    bad,
                )
                dropped.append(f"node {node} ({role}): {bad}")
                continue
            states.append(P.arrays_of(content).to_torch_state_dict())
        if not states:
            raise NonFiniteError(
                "",
                "fedavg-align",
                0,
                f"transceivers from every node ({'; '.join(dropped)})",
                consequence="nothing finite to average, round failed",
            )
        mean = {k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]}
        record = ArrayRecord(mean)
        self._model_bytes, self._model_params = record_nbytes(record), P.record_numel(record)
        return record

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the global model to both nodes (counted as two downloads)."""
        config["server-round"] = server_round
        config["crossover"] = self.link.crossover
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        for role, _ in self._nodes():
            self._count("down", "global_model", arrays, server_round, role)
        return [Message(content, node, P.FEDAVG_TRAIN) for _, node in self._nodes()]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Count both uploads, remember the slower client's FLOPs, then average (FedAvg)."""
        replies = list(replies)
        errors = [r for r in replies if r.has_error()]
        if errors or len(replies) != 2:
            reasons = (
                "; ".join(str(r.error.reason) for r in errors) or f"{len(replies)} of 2 replies"
            )
            raise RuntimeError(f"FedAvg alignment round {server_round} failed: {reasons}")
        # transmitter first, whatever order the replies arrived in: the ledger rows and the
        # average must not depend on it (issue #17 item 4, tests/test_determinism.py)
        replies.sort(key=lambda r: self._role(r.metadata.src_node_id) != "transmitter")
        flops = []
        for rep in replies:
            self._count(
                "up",
                "model",
                P.arrays_of(rep.content),
                server_round,
                self._role(rep.metadata.src_node_id),
            )
            flops.append(P.metric(rep.content, "flops"))
        self._round_flops[server_round] = max(flops)
        replies = finite_replies(
            replies, where="fedavg-align", round_=server_round, key=self.arrayrecord_key
        )
        return super().aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Score the new global model on i's test images (evaluation only, not counted)."""
        config = ConfigRecord(
            {
                "server-round": server_round,
                "crossover": self.link.crossover,
                "seed": self.link.eval_seed,
                "source": self.link.source,
                "epsilon": self.link.epsilon,
            }
        )
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [Message(content, self.link.transmitter, P.FEDAVG_EVAL)]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Keep one history row per round: metrics and cumulative bytes (with final download)."""
        replies = list(replies)
        if len(replies) != 1 or replies[0].has_error():
            reason = replies[0].error.reason if replies and replies[0].has_error() else "no reply"
            raise RuntimeError(f"FedAvg alignment evaluation, round {server_round}: {reason}")
        content = replies[0].content
        clients = self._clients()
        down = self.ledger.total(stage="align", direction="down", client=clients)
        up = self.ledger.total(stage="align", direction="up", client=clients)
        self.history.append(
            {
                "round": float(server_round),
                "mse": P.metric(content, "mse"),
                "accuracy": P.metric(content, "accuracy"),
                # bytes if alignment stopped here: + the final download to both nodes
                "download_bytes": float(down + 2 * self._model_bytes),
                "upload_bytes": float(up),
            }
        )
        return super().aggregate_evaluate(server_round, replies)

    def _clients(self) -> tuple[str, ...]:
        return tuple(self.link.client(role) for role, _ in self._nodes())

    def recovery_time(self, rounds: int) -> float:
        """Modelled recovery time of ``rounds`` rounds (see the module docstring)."""
        r = self.recovery
        per_round = r.download_s(self._model_bytes) + r.upload_s(self._model_bytes)
        compute = sum(r.compute_s(self._round_flops.get(k, 0.0)) for k in range(1, rounds + 1))
        return (
            r.upload_s(self._model_bytes)
            + rounds * per_round
            + compute
            + r.download_s(self._model_bytes)
        )

    def run(self, grid: Grid, rounds: int) -> FedAvgAlignmentResult:
        """Round 0, ``rounds`` FedAvg rounds, final download, aligned transmission."""
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"fedavg rounds must be an integer >= 1, got {rounds!r}")
        t0 = time.perf_counter()
        initial = self.initial_arrays(grid)
        result = self.start(grid, initial, num_rounds=rounds, timeout=self.timeout)
        final = result.arrays
        for role, _ in self._nodes():
            self._count("down", "global_model", final, rounds + 1, role)
            content = RecordDict({"arrays": final, "config": ConfigRecord({"scope": "model"})})
            exchange(grid, [self.link.node(role)], P.INSTALL, self.timeout, [content])
        scores = aligned_transmission(grid, self.link, self.ledger, self.timeout, round=rounds + 1)
        clients = self._clients()
        return FedAvgAlignmentResult(
            rounds=rounds,
            model_params=self._model_params,
            download_bytes=self.ledger.total(stage="align", direction="down", client=clients),
            upload_bytes=self.ledger.total(stage="align", direction="up", client=clients),
            flops=sum(self._round_flops.values()),
            recovery_time_s=self.recovery_time(rounds),
            wall_time_s=time.perf_counter() - t0,
            mse=scores["mse"],
            accuracy=scores["accuracy"],
            num_examples=int(scores["num_examples"]),
            history=list(self.history),
        )
