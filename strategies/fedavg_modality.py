"""FedAvg across the devices of one modality (paper 1 with ``data.devices_per_modality`` > 1).

Paper 1 (Zhao et al., arXiv 2503.13940) has one device per modality; with D devices per
modality (each holding an aligned shard of the scenes) we keep one encoder per modality by
federated averaging (McMahan et al. 2017): after every round, the models of the devices of a
modality are averaged with weights proportional to their sample counts, and the average goes
back to each of them. Devices of different modalities are never averaged together.

- :func:`aggregate_by_modality`: the weighted average per modality (pure function).
- :class:`FedAvgModality`: a Flower strategy with that aggregation. ``configure_train`` sends
  every client its modality's slice of the global arrays (keys ``"<modality>/<name>"``);
  ``aggregate_train`` groups the replies by the sender's modality and averages them, weighted
  by ``num-examples``. Stage I ``local`` (:class:`strategies.pretrain.LocalPretrain`) builds on
  it.
- :func:`average_split_clients`: the same average for models that live in the split runtime
  (Stage I ``split`` and Stage II): weights fetched with ``query.split_state``, sent back
  with ``train.split_set_model`` (the split runtime's own actions).

Every transfer (parameters up, parameters down) is counted in the ledger with the stage
it belongs to. With D = 1 nothing is averaged and nothing is sent.

Non-finite guard (issue #9, :mod:`flwr_semcom.guard`): a client model holding NaN or inf is
dropped from its modality's average with a warning naming the client and the round; a modality
with updates but none finite fails the round with :class:`~flwr_semcom.guard.NonFiniteError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flwr_semcom.accounting import CommLedger
from flwr_semcom.guard import NonFiniteError, nonfinite_summary
from flwr_semcom.runtime.messaging import ClientInfo, record_transfer, send
from flwr_semcom.split.protocol import QUERY_STATE, SET_MODEL

__all__ = [
    "FedAvgModality",
    "aggregate_by_modality",
    "average_split_clients",
    "join_modalities",
    "split_modalities",
]


def aggregate_by_modality(
    items: Iterable[tuple[str, ArrayRecord, float]],
    *,
    sources: Sequence[str] | None = None,
    where: str = "fedavg-modality",
    round_: int | None = None,
) -> dict[str, ArrayRecord]:
    """Sample-weighted average of the models of each modality.

    Parameters
    ----------
    items
        ``(modality, arrays, num_examples)`` per client. Within a modality the keys, shapes
        and dtypes must agree.
    sources
        A name per item for the log (e.g. ``"node 12"``); default ``"client <i>"``.
    where, round_
        Stage and round named in the non-finite warning and error.

    Returns
    -------
    dict
        ``{modality: averaged ArrayRecord}``. Floating-point arrays are averaged with weights
        ``n_i / Σ n``; integer arrays (e.g. batch-norm ``num_batches_tracked``) take the
        weighted average rounded to the nearest integer.

    Raises
    ------
    ValueError
        On a weight <= 0, or models of one modality that do not match.
    NonFiniteError
        When every model of a modality holds NaN or inf (a non-finite model among finite
        ones is dropped from the average with a warning).
    """
    groups: dict[str, list[tuple[ArrayRecord, float]]] = {}
    dropped: dict[str, list[str]] = {}
    for i, (modality, arrays, n) in enumerate(items):
        if not n > 0:
            raise ValueError(f"num-examples must be > 0 for FedAvg, got {n} ({modality})")
        bad = nonfinite_summary(arrays)
        if bad is not None:
            who = sources[i] if sources is not None else f"client {i}"
            log(
                WARNING,
                "non-finite %s model from %s in %s, round %s: %s; dropped from the average",
                modality,
                who,
                where,
                round_,
                bad,
            )
            dropped.setdefault(str(modality), []).append(f"{who}: {bad}")
            continue
        groups.setdefault(str(modality), []).append((arrays, float(n)))
    for modality, why in dropped.items():
        if modality not in groups:
            raise NonFiniteError(
                "",
                where,
                round_,
                f"{modality} models from every device ({'; '.join(why)})",
                consequence="nothing finite to average, round failed",
            )
    out: dict[str, ArrayRecord] = {}
    for modality, members in groups.items():
        keys = list(members[0][0].keys())
        for arrays, _ in members[1:]:
            if list(arrays.keys()) != keys:
                raise ValueError(f"FedAvg: the {modality} models have different parameter names")
        total = sum(n for _, n in members)
        avg = ArrayRecord()
        for key in keys:
            first = members[0][0][key].numpy()
            acc = np.zeros(first.shape, dtype=np.float64)
            for arrays, n in members:
                a = arrays[key].numpy()
                if a.shape != first.shape:
                    raise ValueError(
                        f"FedAvg: {modality} parameter {key!r} has shapes {first.shape} and "
                        f"{a.shape}"
                    )
                acc += a.astype(np.float64) * (n / total)
            if np.issubdtype(first.dtype, np.integer):
                acc = np.rint(acc)
            avg[key] = Array(np.ascontiguousarray(acc.astype(first.dtype)))
        out[modality] = avg
    return out


def join_modalities(per_modality: Mapping[str, ArrayRecord]) -> ArrayRecord:
    """One ArrayRecord with keys ``"<modality>/<name>"``."""
    joined = ArrayRecord()
    for modality, arrays in per_modality.items():
        for key, arr in arrays.items():
            joined[f"{modality}/{key}"] = arr
    return joined


def split_modalities(joined: ArrayRecord) -> dict[str, ArrayRecord]:
    """Inverse of :func:`join_modalities`."""
    out: dict[str, ArrayRecord] = {}
    for key, arr in joined.items():
        modality, sep, name = key.partition("/")
        if not sep:
            raise ValueError(f"array key {key!r} is not '<modality>/<name>'")
        out.setdefault(modality, ArrayRecord())[name] = arr
    return out


class FedAvgModality(Strategy):
    """FedAvg within each modality.

    Parameters
    ----------
    clients
        The clients, with ``role`` = their modality.
    message_type
        The client action of one training round (e.g. ``train.p1_pretrain_local``).
    stage
        Ledger stage of the parameter transfers.
    ledger
        Where transfers are counted.
    weights_key
        Name of the ArrayRecord in messages and replies (``"weights"``).
    """

    def __init__(
        self,
        clients: Sequence[ClientInfo],
        message_type: str,
        *,
        stage: str,
        ledger: CommLedger | None = None,
        weights_key: str = "weights",
    ) -> None:
        self.clients = list(clients)
        self.message_type = message_type
        self.stage = stage
        self.ledger = ledger if ledger is not None else CommLedger()
        self.weights_key = weights_key
        self._by_node = {c.node_id: c for c in self.clients}

    def label(self, client: ClientInfo) -> str:
        """The ledger's client column (``"<partition>:<role>"``)."""
        return client.label

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One message per client: ``config`` and, if ``arrays`` has any, its modality's slice.

        ``config`` gets ``round`` = ``server_round``. The slice is counted as parameters down.
        """
        per_modality = split_modalities(arrays) if len(arrays) else {}
        msgs = []
        for c in self.clients:
            cfg = ConfigRecord(dict(config))
            cfg["round"] = server_round
            content = RecordDict({"config": cfg})
            if c.role in per_modality:
                content[self.weights_key] = per_modality[c.role]
            record_transfer(
                self.ledger,
                "down",
                content,
                stage=self.stage,
                round_=server_round,
                client=c.label,
                kinds={self.weights_key: "parameters"},
            )
            msgs.append(Message(content, c.node_id, self.message_type, group_id=str(server_round)))
        return msgs

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Per-modality FedAvg of the replies' weights; sample-weighted mean of the metrics.

        Returns ``(joined averages or None when no reply carried weights, metrics)``; the
        metrics also hold ``num-examples`` (the total).

        The replies are taken in the senders' partition order, whatever order they arrived
        in: the ledger rows, the float64 metric sums and the per-modality averages (not
        order-free from 3 devices per modality on) are then the same bytes in every run, and
        warnings name the client by its label (``"<partition>:<role>"``), not by its random
        node ID.
        """
        received: list[tuple[ClientInfo, Message]] = []
        for reply in replies:
            client = self._by_node.get(reply.metadata.src_node_id)
            if client is None:
                raise ValueError(f"reply from unknown node {reply.metadata.src_node_id}")
            received.append((client, reply))
        received.sort(key=lambda pair: pair[0].partition_id)
        items: list[tuple[str, ArrayRecord, float]] = []
        sources: list[str] = []
        sums: dict[str, float] = {}
        total = 0.0
        for client, reply in received:
            metrics = reply.content.metric_records["metrics"]
            n = float(metrics["num-examples"])  # type: ignore[arg-type]
            total += n
            for k, v in metrics.items():
                if k != "num-examples":
                    sums[k] = sums.get(k, 0.0) + float(v) * n  # type: ignore[arg-type]
            if self.weights_key in reply.content:
                arrays = reply.content.array_records[self.weights_key]
                items.append((client.role, arrays, n))
                sources.append(f"client {client.label}")
                record_transfer(  # the weights (the metrics are the round's bookkeeping)
                    self.ledger,
                    "up",
                    RecordDict({self.weights_key: arrays}),
                    stage=self.stage,
                    round_=server_round,
                    client=client.label,
                    kinds={self.weights_key: "parameters"},
                )
        metrics_out = MetricRecord({k: v / total for k, v in sums.items()} if total else {})
        metrics_out["num-examples"] = total
        if not items:
            return None, metrics_out
        averages = aggregate_by_modality(
            items, sources=sources, where=self.stage, round_=server_round
        )
        return join_modalities(averages), metrics_out

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """No federated evaluation (Stage II evaluates through the split runtime)."""
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        log(
            INFO,
            "FedAvgModality: %d clients (%s), action %s, stage %s",
            len(self.clients),
            ", ".join(sorted({c.role for c in self.clients})),
            self.message_type,
            self.stage,
        )


def average_split_clients(
    grid: Grid,
    clients: Sequence[ClientInfo],
    *,
    task: str,
    num_examples: Mapping[int, float],
    task_params: Mapping[str, Any] | None = None,
    ledger: CommLedger,
    stage: str,
    server_round: int,
    poll_interval: float = 0.005,
    timeout: float = 600.0,
) -> dict[str, ArrayRecord]:
    """FedAvg per modality of the client models of split task ``task``.

    Fetches each client's model (``query.split_state`` with ``weights``), averages per
    modality with weights ``num_examples[partition_id]`` and stores the average on every
    client of the modality (``train.split_set_model``, record ``"weights"``). ``task_params``
    go into both config records beside the task name (what the client builds the task from).
    Counts parameters up and down. Returns the averages by modality.
    """
    msgs = [
        Message(
            RecordDict(
                {"config": ConfigRecord({**dict(task_params or {}), "task": task, "weights": True})}
            ),
            c.node_id,
            QUERY_STATE,
        )
        for c in clients
    ]
    replies = send(
        grid, msgs, clients, action=QUERY_STATE, poll_interval=poll_interval, timeout=timeout
    )
    items = []
    for c, reply in zip(clients, replies):
        arrays = reply.content.array_records["state"]
        record_transfer(
            ledger,
            "up",
            RecordDict({"state": arrays}),
            stage=stage,
            round_=server_round,
            client=c.label,
            kinds={"state": "parameters"},
        )
        items.append((c.role, arrays, float(num_examples[c.partition_id])))
    averages = aggregate_by_modality(
        items, sources=[c.describe() for c in clients], where=stage, round_=server_round
    )
    down = []
    for c in clients:
        content = RecordDict(
            {
                "config": ConfigRecord({**dict(task_params or {}), "task": task}),
                "weights": averages[c.role],
            }
        )
        record_transfer(
            ledger,
            "down",
            RecordDict({"weights": averages[c.role]}),
            stage=stage,
            round_=server_round,
            client=c.label,
            kinds={"weights": "parameters"},
        )
        down.append(Message(content, c.node_id, SET_MODEL))
    send(
        grid,
        down,
        clients,
        action=SET_MODEL,
        poll_interval=poll_interval,
        timeout=timeout,
    )
    return averages
