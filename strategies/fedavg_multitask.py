"""FedAvg in a fixed device order, with a ledger and exact (summed) federated evaluation.

Used by paper 3 (arXiv 2501.02006), whose GAI link, GAI-w ablation and separate single-task
links we train with FedAvg (McMahan et al. 2017) following issue #10; nothing here is specific
to that paper. Every round the global arrays go down to each of the ``D`` devices, each trains
locally and uploads its arrays, and the server averages them weighted by ``num-examples``
(Flower's :class:`~flwr.serverapp.strategy.FedAvg`). After every round the new global arrays
go down again for federated evaluation; the devices return *additive* metric sums (correct
counts, squared errors, pixel counts …), which are summed exactly instead of averaged
(:func:`sum_metricrecords`), so the caller can turn them into exact metrics.

**Determinism.** Flower returns replies in the order they arrive, and FedAvg's float32
weighted sum depends on that order (about 40 % of the averaged elements differ in the last bit
between two orders; training amplifies it). Node IDs are random per run. So every reply must
carry its device's partition id (``"node"`` :class:`~flwr.app.ConfigRecord`,
``{"partition-id": d}``), and the strategy sorts the replies by it before aggregating,
summing, or writing the ledger. The same seed then gives byte-equal results whatever the
reply order or the node IDs. A round that misses a reply fails instead of averaging fewer
devices.

Reply contract (train): ``"arrays"``, ``"metrics"`` (with ``num-examples``) and ``"node"``;
(evaluate): ``"metrics"`` (additive sums; ``num-examples``; optionally ``channel-uses``, the
complex channel uses the device spent over the air) and ``"node"``.

Ledger (:class:`~flwr_semcom.accounting.CommLedger`), in device order: per device and round
the arrays down and up (stage ``pretrain``, kind ``parameters``), the evaluation download
(stage ``eval``, kind ``parameters``) and the over-the-air evaluation (stage ``eval``, kind
``symbols``, 0 bytes, ``channel-uses`` channel uses). Client names are
``<label>/device<d>``, independent of the node IDs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flwr_semcom.accounting import CommLedger, record_nbytes

__all__ = [
    "PARTITION_KEY",
    "PARTITION_RECORD",
    "FedAvgMultitask",
    "RoundReport",
    "order_by_partition",
    "sum_metricrecords",
]

#: Name of the reply's ConfigRecord that identifies the device, and its key.
PARTITION_RECORD = "node"
PARTITION_KEY = "partition-id"
ConfigValue = int | float | str | bool


@dataclass(frozen=True)
class RoundReport:
    """What one round produced, handed to ``on_round``.

    ``train`` holds FedAvg's ``num-examples``-weighted averages of the devices' training
    metrics; ``evaluation`` the exact sums of their evaluation metrics; ``bytes_up`` /
    ``bytes_down`` the cumulative training parameter bytes of this strategy's devices.
    """

    round: int
    train: dict[str, float]
    evaluation: dict[str, float]
    bytes_up: int
    bytes_down: int
    elapsed_s: float


def partition_of(reply: Message) -> int:
    """The partition id a reply carries (``ValueError`` naming the node if it has none)."""
    record = reply.content.config_records.get(PARTITION_RECORD)
    value = None if record is None else record.get(PARTITION_KEY)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"reply from node {reply.metadata.src_node_id} has no integer "
            f"{PARTITION_RECORD!r}[{PARTITION_KEY!r}] (got {value!r}); the fixed aggregation "
            "order needs it"
        )
    return value


def order_by_partition(replies: Iterable[Message]) -> list[Message]:
    """The replies sorted by partition id (``ValueError`` on a missing or repeated id)."""
    keyed = sorted(((partition_of(r), i, r) for i, r in enumerate(replies)), key=lambda x: x[:2])
    ids = [k for k, _, _ in keyed]
    if len(set(ids)) != len(ids):
        raise ValueError(f"two replies carry the same partition id: {ids}")
    return [r for _, _, r in keyed]


def sum_metricrecords(records: list[RecordDict], weighted_by_key: str = "") -> MetricRecord:
    """Key-by-key sum of each reply's single MetricRecord, in the given order.

    A drop-in ``evaluate_metrics_aggr_fn`` for additive statistics (``weighted_by_key`` is
    accepted for Flower's signature and unused). Only scalar values are allowed.
    """
    sums: dict[str, int | float] = {}
    for content in records:
        (metrics,) = content.metric_records.values()
        for key, value in metrics.items():
            if isinstance(value, list):
                raise TypeError(f"metric {key!r}: sums need scalars, got a list")
            sums[key] = sums.get(key, 0) + value
    return MetricRecord(dict(sums))


class FedAvgMultitask(FedAvg):
    """FedAvg of one link over ``num_devices`` devices, in a fixed order, with a ledger.

    Parameters
    ----------
    num_devices
        ``D``: every round waits for, and requires replies from, all ``D`` devices.
    task_params
        Typed values added to every message's ``"config"`` record (e.g. ``{"method": "gai",
        "ratio": 0.25}``), so the devices know which link to build.
    train_message_type, evaluate_message_type
        The devices' handlers (Flower's ``"train"`` / ``"evaluate"`` by default).
    ledger
        Where transfers are counted (a new one if ``None``).
    label
        Prefix of the ledger's client names.
    on_round
        Called with a :class:`RoundReport` after each round's evaluation.
    """

    def __init__(
        self,
        *,
        num_devices: int,
        task_params: Mapping[str, ConfigValue] | None = None,
        train_message_type: str = "train",
        evaluate_message_type: str = "evaluate",
        ledger: CommLedger | None = None,
        label: str = "",
        on_round: Callable[[RoundReport], None] | None = None,
    ) -> None:
        if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
            raise ValueError(f"num_devices must be an integer >= 1, got {num_devices!r}")
        super().__init__(
            min_train_nodes=num_devices,
            min_evaluate_nodes=num_devices,
            min_available_nodes=num_devices,
            evaluate_metrics_aggr_fn=sum_metricrecords,
        )
        self.num_devices = num_devices
        self.task_params = dict(task_params or {})
        self.train_message_type = train_message_type
        self.evaluate_message_type = evaluate_message_type
        self.ledger = CommLedger() if ledger is None else ledger
        self.label = label
        self.on_round = on_round
        self.reports: list[RoundReport] = []
        self._sent: dict[int, int] = {}  # node id -> bytes of the arrays sent this phase
        self._train: dict[int, dict[str, float]] = {}
        self._clients: set[str] = set()
        self._t0 = time.perf_counter()

    def _client(self, partition: int) -> str:
        return f"{self.label}/device{partition}"

    def _messages(self, msgs: Iterable[Message], message_type: str) -> list[Message]:
        """Retype FedAvg's messages, add ``task_params``; one per node, by node id."""
        out = []
        self._sent = {}
        for msg in sorted(msgs, key=lambda m: m.metadata.dst_node_id):
            content = msg.content
            config = content.config_records[self.configrecord_key]
            for key, value in self.task_params.items():
                config[key] = value
            dst = msg.metadata.dst_node_id
            self._sent[dst] = record_nbytes(content.array_records[self.arrayrecord_key])
            out.append(Message(content, dst, message_type))
        return out

    def _checked(self, server_round: int, replies: Iterable[Message], what: str) -> list[Message]:
        """All expected replies, none an error, sorted by partition id (else RuntimeError)."""
        replies = list(replies)
        errors = [r for r in replies if r.has_error()]
        missing = set(self._sent) - {r.metadata.src_node_id for r in replies}
        if errors or missing or not replies:
            reason = "; ".join(str(r.error.reason) for r in errors)
            if missing:
                reason = f"{reason}; " if reason else ""
                reason += f"no reply from node(s) {sorted(missing)}"
            raise RuntimeError(
                f"{self.label or 'fedavg'} {what} {server_round} failed: {reason or 'no replies'}"
            )
        return order_by_partition(replies)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages, typed ``train_message_type``, with ``task_params``."""
        msgs = super().configure_train(server_round, arrays, config, grid)
        return self._messages(msgs, self.train_message_type)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Count each device's download and upload, then average in partition order."""
        ordered = self._checked(server_round, replies, "round")
        for rep in ordered:
            client = self._client(partition_of(rep))
            self._clients.add(client)
            for direction, nbytes in (
                ("down", self._sent[rep.metadata.src_node_id]),
                ("up", record_nbytes(rep.content.array_records[self.arrayrecord_key])),
            ):
                self.ledger.record(
                    direction=direction,
                    stage="pretrain",
                    kind="parameters",
                    nbytes=nbytes,
                    round=server_round,
                    client=client,
                )
        arrays, metrics = super().aggregate_train(server_round, ordered)
        self._train[server_round] = {k: float(v) for k, v in (metrics or {}).items()}  # type: ignore[arg-type]
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's evaluation messages, typed ``evaluate_message_type``, with ``task_params``."""
        msgs = super().configure_evaluate(server_round, arrays, config, grid)
        return self._messages(msgs, self.evaluate_message_type)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Count the evaluation traffic; sum the devices' metrics in partition order."""
        ordered = self._checked(server_round, replies, "evaluation")
        for rep in ordered:
            client = self._client(partition_of(rep))
            self.ledger.record(
                direction="down",
                stage="eval",
                kind="parameters",
                nbytes=self._sent[rep.metadata.src_node_id],
                round=server_round,
                client=client,
            )
            (metrics,) = rep.content.metric_records.values()
            uses = metrics.get("channel-uses", 0)
            if isinstance(uses, bool) or not isinstance(uses, int) or uses < 0:
                raise ValueError(f"channel-uses must be an integer >= 0, got {uses!r}")
            if uses:
                self.ledger.record(
                    direction="up",
                    stage="eval",
                    kind="symbols",
                    nbytes=0,
                    channel_uses=uses,
                    round=server_round,
                    client=client,
                )
        sums = super().aggregate_evaluate(server_round, ordered)
        clients = tuple(sorted(self._clients))
        report = RoundReport(
            round=server_round,
            train=self._train.get(server_round, {}),
            evaluation={k: float(v) for k, v in (sums or {}).items()},  # type: ignore[arg-type]
            bytes_up=self.ledger.total(stage="pretrain", direction="up", client=clients),
            bytes_down=self.ledger.total(stage="pretrain", direction="down", client=clients),
            elapsed_s=time.perf_counter() - self._t0,
        )
        self.reports.append(report)
        if self.on_round is not None:
            self.on_round(report)
        return sums
