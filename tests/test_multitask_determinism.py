"""The same seed gives byte-equal multitask results, whatever the reply order or node IDs.

Issue #17 item 4. The cause of the drift was FedAvg's float32 weighted sum taken in reply
arrival order (and Flower's random node sampling order); :class:`FedAvgMultitask` now sorts
replies by partition id before it aggregates, sums or writes the ledger. These tests run the
experiment twice on grids that differ in node IDs and reply order and compare the results
folders byte for byte (wall times excluded: :data:`_runs.WALL`; multitask writes
``elapsed_s``, ``wall_s`` and ``wall_time_s``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _runs import FILES, ScrambledGrid, fingerprint, run_in_process  # tests/ is on sys.path
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.task_identity import TaskIdentity
from test_multitask_federated import TINY, _app

from flwr_semcom.accounting import CommLedger
from flwr_semcom.multitask import protocol as P
from strategies.fedavg_multitask import FedAvgMultitask

#: every file a multitask run writes that must not depend on timing
NAMES = ("metrics.json", *FILES["multitask"])


def _run_folder(tmp: Path, node_ids: Sequence[int], order_seed: int) -> tuple[Path, list[int]]:
    overrides = (
        f"{TINY} multitask.num_devices=3 multitask.num_samples=90 "
        "multitask.methods=[gai,separate] multitask.bandwidth_ratios=[0.25]"
    )
    summary, grid = run_in_process(
        "multitask",
        overrides,
        tmp,
        grid=lambda nodes, rc: ScrambledGrid(nodes, rc, node_ids, order_seed, app=_app()),
    )
    assert isinstance(grid, ScrambledGrid)
    return Path(summary["results_dir"]), grid.reply_order


def _replies(order: Sequence[int], node_ids: Sequence[int]) -> list[Message]:
    """Three train replies (partition ``d``: 10 + d examples, random arrays) in ``order``."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1  # as a ServerApp
    out = []
    for d in order:
        g = torch.Generator().manual_seed(d)
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": torch.randn(4096, generator=g)}),
                "metrics": MetricRecord({"num-examples": 10 + d, "loss": 0.1 * d}),
                "node": P.node_record(d),
            }
        )
        msg = Message(RecordDict({"config": ConfigRecord({})}), node_ids[d], P.FIT)
        rep = Message(content, reply_to=msg)
        rep.metadata.__dict__["_src_node_id"] = node_ids[d]
        out.append(rep)
    return out


def test_flower_fedavg_depends_on_reply_order_and_ours_does_not() -> None:
    # the cause: Flower's FedAvg sums float32 arrays in the order the replies arrived
    ordered = [r.content for r in _replies([0, 1, 2], [7, 8, 9])]
    a = aggregate_arrayrecords(ordered, "num-examples")["w"].numpy()
    b = aggregate_arrayrecords(ordered[::-1], "num-examples")["w"].numpy()
    assert np.abs(a - b).max() < 1e-6 and (a != b).sum() > 100  # same math, other last bits

    def aggregate(order: list[int], node_ids: list[int]) -> tuple[bytes, list[Any], float]:
        ledger = CommLedger()
        strategy = FedAvgMultitask(num_devices=3, ledger=ledger, label="x")
        strategy._sent = {n: 123 for n in node_ids}  # as configure_train leaves it
        arrays, metrics = strategy.aggregate_train(1, _replies(order, node_ids))
        assert arrays is not None and metrics is not None
        loss = metrics["loss"]
        assert isinstance(loss, float)
        return arrays["w"].numpy().tobytes(), ledger.to_records(), loss

    first = aggregate([2, 0, 1], [5, 3, 4])
    second = aggregate([1, 2, 0], [90, 17, 2**40])
    assert first == second
    assert first[0] == a.tobytes()  # partition order 0, 1, 2
    assert [r["client"] for r in first[1]] == [f"x/device{d}" for d in (0, 0, 1, 1, 2, 2)]


def test_a_reply_without_partition_id_or_a_missing_reply_fails_the_round() -> None:
    strategy = FedAvgMultitask(num_devices=2, label="x")
    strategy._sent = {7: 1, 8: 1}
    replies = _replies([0, 1], [7, 8])
    with pytest.raises(RuntimeError, match=r"^x round 1 failed: no reply from node\(s\) \[8\]$"):
        strategy.aggregate_train(1, replies[:1])
    del replies[1].content["node"]
    with pytest.raises(ValueError, match="reply from node 8 has no integer 'node'"):
        strategy.aggregate_train(1, replies)
    with pytest.raises(ValueError, match="num_devices must be an integer >= 1, got 0"):
        FedAvgMultitask(num_devices=0)


def test_same_seed_gives_byte_equal_results_whatever_reply_order(tmp_path: Path) -> None:
    folder_a, order_a = _run_folder(tmp_path / "a", [1000, 1001, 1002], order_seed=0)
    folder_b, order_b = _run_folder(tmp_path / "b", [2**40, 77, 5], order_seed=1)
    # the two runs saw the replies in other orders (2 links x 2 rounds x train + evaluate)
    assert len(order_a) == len(order_b) == 2 * 2 * 2 * 3 and order_a != order_b
    first, second = fingerprint(folder_a, NAMES), fingerprint(folder_b, NAMES)
    for name in first:
        assert first[name] == second[name], name
