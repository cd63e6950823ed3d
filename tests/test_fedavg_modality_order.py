"""FedAvgModality.aggregate_train does not depend on reply order or node IDs (issue #17)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from _messages import received  # tests/ is on sys.path
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

import strategies.fedavg_modality as fm
from flwr_semcom.accounting import CommLedger
from flwr_semcom.runtime.messaging import ClientInfo
from strategies.fedavg_modality import FedAvgModality, aggregate_by_modality

ROLES = ("rgb", "rgb", "rgb", "depth", "depth", "depth")  # 3 devices per modality
SIZE = 100_000


def _weights(p: int) -> np.ndarray:
    return np.random.default_rng(p).standard_normal(SIZE).astype(np.float32)


def _num_examples(p: int) -> int:
    return 7 + 3 * p


def _clients(node_ids: Sequence[int]) -> list[ClientInfo]:
    return [ClientInfo(node_ids[p], p, role) for p, role in enumerate(ROLES)]


def _replies(order: Sequence[int], node_ids: Sequence[int]) -> list[Any]:
    out = []
    for p in order:
        weights = _weights(p)
        if p == 4:
            weights[3] = np.nan  # dropped from the depth average with a warning
        metrics = MetricRecord({"num-examples": _num_examples(p), "loss": 0.1 + 1 / (p + 3)})
        content = RecordDict({"metrics": metrics, "weights": ArrayRecord({"w": Array(weights)})})
        out.append(received(content, "train.p1_pretrain_local", src=node_ids[p]))
    return out


def test_same_replies_in_any_order_and_with_any_node_ids_give_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(fm, "log", lambda level, fmt, *args: warnings.append(fmt % args))

    def aggregate(order: list[int], node_ids: list[int]) -> tuple[Any, ...]:
        ledger = CommLedger()
        strategy = FedAvgModality(_clients(node_ids), "train.p1_pretrain_local", stage="pretrain")
        strategy.ledger = ledger
        arrays, metrics = strategy.aggregate_train(3, _replies(order, node_ids))
        assert arrays is not None and metrics is not None
        blobs = {k: v.numpy().tobytes() for k, v in arrays.items()}
        return blobs, dict(metrics), ledger.to_records()

    first = aggregate([0, 1, 2, 3, 4, 5], [11, 12, 13, 21, 22, 23])
    second = aggregate([5, 3, 1, 4, 2, 0], [2**40, 77, 5, 901, 3, 64])
    assert first == second
    assert sorted(first[0]) == ["depth/w", "rgb/w"]
    # the ledger's "up" rows come in partition order, named by label (not node ID)
    assert [r["client"] for r in first[2]] == [f"{p}:{role}" for p, role in enumerate(ROLES)]
    # the warnings name the client by its label: the same text in both runs
    assert len(warnings) == 2 and warnings[0] == warnings[1]
    assert "depth model from client 4:depth in pretrain, round 3" in warnings[0]
    # metrics: sample-weighted mean over the partitions 0..5
    n = [_num_examples(p) for p in range(6)]
    loss = sum((0.1 + 1 / (p + 3)) * n[p] for p in range(6)) / sum(n)
    assert first[1]["num-examples"] == sum(n)
    assert first[1]["loss"] == pytest.approx(loss, rel=1e-12)

    # the sort matters: the float32 average of 3 models depends on the summation order
    def rgb(order: list[int]) -> bytes:
        items = [("rgb", ArrayRecord({"w": Array(_weights(p))}), float(n[p])) for p in order]
        return aggregate_by_modality(items)["rgb"]["w"].numpy().tobytes()

    assert first[0]["rgb/w"] == rgb([0, 1, 2])
    assert rgb([2, 1, 0]) != rgb([0, 1, 2])


def test_a_reply_from_an_unknown_node_is_refused() -> None:
    strategy = FedAvgModality(_clients([11, 12, 13, 21, 22, 23]), "x", stage="pretrain")
    with pytest.raises(ValueError, match="reply from unknown node 99"):
        strategy.aggregate_train(1, _replies([0], [99] * 6))
