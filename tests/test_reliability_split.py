"""Client failure policies of the split runtime, in process (issue #9, part B, item 1).

Faults are injected with the test-only ``reliability.fault`` settings (the client raises before
touching its state) or by a grid that loses one node's replies (a vanished device). Each
policy is checked end to end through the ``split_supervised`` runner: what is logged, what the
run produces, and that completed rounds stay in ``metrics.csv``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Message

from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import ConfigError, compose_config
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.split.protocol import TRAIN_STEP
from simulations.experiments.split_supervised import run
from strategies.split_training import ClientFailureError, ClientTimeoutError

TINY = (
    "data.num_samples=40 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=8 strategy.rounds=3 reliability.checkpoint_every=0"
)
LEARNING = ("loss", "train_accuracy", "test_loss", "test_accuracy")


def _run(tmp: Path, extra: str, grid_cls: type[InProcessGrid] = InProcessGrid) -> dict[str, Any]:
    overrides = f"{TINY} paths.output_dir={tmp} {extra}"
    nodes = [{"partition-id": i, "num-partitions": 2} for i in range(2)]
    grid = grid_cls(client_app, nodes, {"experiment": "split_supervised", "overrides": overrides})
    return run(grid, compose_config("split_supervised", overrides), grid.server_context())


def _rows(tmp: Path) -> list[dict[str, str]]:
    (folder,) = (tmp / "split_supervised").iterdir()
    with open(folder / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


@pytest.fixture(scope="module")
def clean_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """The same run without any fault."""
    tmp = tmp_path_factory.mktemp("clean")
    _run(tmp, "")
    return _rows(tmp)


def test_abort_stops_with_one_clear_line_and_keeps_completed_rounds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clean_rows: list[dict[str, str]]
) -> None:
    fault = "reliability.fault.partition=1 reliability.fault.round=2 reliability.fault.exchange=1"
    with caplog.at_level(logging.ERROR, logger="flwr"), pytest.raises(ClientFailureError) as err:
        _run(tmp_path, fault)
    text = str(err.value)
    assert "node 1001 (partition 1, depth) failed in train.split_step (round 2, exchange 1)" in text
    assert "injected fault 'raise'" in text and "on_failure=abort" in text
    assert any(
        m.startswith("reliability: ") and text in m for m in _messages(caplog, logging.ERROR)
    )
    rows = _rows(tmp_path)
    assert [r["round"] for r in rows] == ["1"]
    assert {k: rows[0][k] for k in LEARNING} == {k: clean_rows[0][k] for k in LEARNING}


def test_skip_drops_the_device_for_the_round_and_continues(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clean_rows: list[dict[str, str]]
) -> None:
    fault = (
        "reliability.on_failure=skip reliability.fault.partition=1 reliability.fault.round=2 "
        "reliability.fault.exchange=1"
    )
    with caplog.at_level(logging.WARNING, logger="flwr"):
        summary = _run(tmp_path, fault)
    warnings = _messages(caplog, logging.WARNING)
    assert any(
        "client node 1001 (partition 1, depth) failed (train.split_step, round 2, exchange 1)" in m
        and "on_failure=skip: device skipped for the rest of round 2" in m
        for m in warnings
    ), warnings
    rows = _rows(tmp_path)
    assert [r["round"] for r in rows] == ["1", "2", "3"] and summary["rounds"] == 3
    assert [r.get("skipped", "") for r in rows] == ["", "1:depth", ""]
    same = {k: rows[0][k] for k in LEARNING} == {k: clean_rows[0][k] for k in LEARNING}
    assert same  # round 1 is untouched; round 2 trained with a zero-filled depth uplink
    assert rows[1]["loss"] != clean_rows[1]["loss"]
    # the skipped device sent nothing after its failure: less uplink than in a clean round
    up = [int(r["cum_up_bytes"]) for r in rows]
    clean_up = [int(r["cum_up_bytes"]) for r in clean_rows]
    assert up[1] - up[0] < up[2] - up[1] == clean_up[2] - clean_up[1]


def test_wait_resends_a_failed_message_and_the_run_is_unchanged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clean_rows: list[dict[str, str]]
) -> None:
    fault = (
        "reliability.on_failure=wait reliability.retries=1 reliability.fault.partition=0 "
        "reliability.fault.round=2 reliability.fault.exchange=2 reliability.fault.attempts=1"
    )
    with caplog.at_level(logging.WARNING, logger="flwr"):
        _run(tmp_path, fault)
    assert any("on_failure=wait: re-sending (attempt 1 of 1)" in m for m in caplog.messages)
    rows = _rows(tmp_path)
    # an error reply leaves the client's state unchanged, so the re-send is exact
    assert [{k: r[k] for k in LEARNING} for r in rows] == [
        {k: r[k] for k in LEARNING} for r in clean_rows
    ]


def test_wait_gives_up_after_the_retries(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fault = (
        "reliability.on_failure=wait reliability.retries=2 reliability.fault.partition=0 "
        "reliability.fault.round=1 reliability.fault.exchange=1"
    )
    with caplog.at_level(logging.WARNING, logger="flwr"), pytest.raises(ClientFailureError) as err:
        _run(tmp_path, fault)
    assert "on_failure=wait after 2 re-send(s): run aborted" in str(err.value)
    assert sum("re-sending (attempt" in m for m in caplog.messages) == 2


class _VanishingGrid(InProcessGrid):
    """Node 1001 (partition 1) never answers the train.split_step messages of round 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lost: set[str] = set()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        msgs = list(messages)
        ids = list(super().push_messages(msgs))
        for m, i in zip(msgs, ids):
            rnd = m.content.config_records["config"].get("round")
            if (
                m.metadata.message_type == TRAIN_STEP
                and m.metadata.dst_node_id == 1001
                and rnd == 2
            ):
                self._lost.add(i)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return super().pull_messages([i for i in message_ids if i not in self._lost])


def test_a_vanished_device_is_skipped_after_the_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extra = "reliability.on_failure=skip strategy.timeout=0.3"
    with caplog.at_level(logging.WARNING, logger="flwr"):
        _run(tmp_path, extra, _VanishingGrid)
    assert any(
        "no reply within timeout=0.3 s" in m and "on_failure=skip" in m for m in caplog.messages
    )
    assert [r.get("skipped", "") for r in _rows(tmp_path)] == ["", "1:depth", ""]


def test_a_vanished_device_aborts_by_default(tmp_path: Path) -> None:
    with pytest.raises(ClientTimeoutError, match=r"no reply within timeout=0.3 s from"):
        _run(tmp_path, "strategy.timeout=0.3", _VanishingGrid)
    assert [r["round"] for r in _rows(tmp_path)] == ["1"]


def test_skip_before_any_uplink_is_refused(tmp_path: Path) -> None:
    fault = "reliability.on_failure=skip reliability.fault.partition=1 reliability.fault.round=1"
    with pytest.raises(ClientFailureError, match="cannot be zero-filled"):
        _run(tmp_path, fault)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("reliability.on_failure=retry", "reliability.on_failure: invalid value 'retry'"),
        ("reliability.retries=-1", "reliability.retries: invalid value -1"),
        ("reliability.fault.kind=explode", "reliability.fault.kind: invalid value 'explode'"),
        ("reliability.checkpoint_every=-2", "reliability.checkpoint_every: invalid value -2"),
    ],
)
def test_bad_reliability_settings_fail_in_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose_config("split_supervised", override)
    assert message in str(err.value) and "\n" not in str(err.value)
