"""Ledger totals of one split round against a hand computation; error and timeout reporting."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pytest
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from torch import nn

from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import compose_config
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.paper1.factory import node_config_of
from flwr_semcom.paper1.stage2 import SUPERVISED_CLIENT_TASK, supervised_device, supervised_server
from flwr_semcom.runtime.messaging import ClientError
from flwr_semcom.split import BatchPlan, ClientTask, add_split_client, split_kwargs
from flwr_semcom.split.protocol import TRAIN_STEP
from strategies.split_training import SplitTraining

OVERRIDES = (
    "data.num_samples=40 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=8 strategy.steps_per_message=3 strategy.rounds=1 "
    "strategy.eval_batch_size=256"
)
NODES = [{"partition-id": i, "num-partitions": 2} for i in range(2)]


def _grid(
    overrides: str = OVERRIDES,
    grid_cls: type[InProcessGrid] = InProcessGrid,
    app: ClientApp = client_app,
) -> InProcessGrid:
    return grid_cls(app, NODES, {"experiment": "split_supervised", "overrides": overrides})


def _strategy(
    overrides: str = OVERRIDES, client_task: str = SUPERVISED_CLIENT_TASK
) -> SplitTraining:
    cfg = compose_config("split_supervised", overrides)
    return SplitTraining(supervised_server(cfg), client_task=client_task, **split_kwargs(cfg))


def test_one_round_ledger_equals_a_hand_computation() -> None:
    grid = _grid()
    strategy = _strategy()
    strategy.start(grid)
    led = strategy.ledger
    # 40 scenes, 10 balanced classes, test_fraction 0.2 -> 1 test scene per class
    assert strategy.server.train_ids.shape[0] == 30 and strategy.server.test_ids.shape[0] == 10
    # batches 8, 8, 8, 6 -> groups of S=3: [8, 8, 8], [6] -> 3 exchanges per client
    k, reals, clients = 4, 8, 2
    up_features = clients * 30 * reals * 4  # float32 ẑ of every training sample
    assert (
        led.total("bytes", round=1, stage="finetune", direction="up", kind="features")
        == up_features
    )
    assert led.total("channel_uses", round=1, stage="finetune") == clients * 30 * k
    assert led.total("bytes", round=1, stage="finetune", kind="gradients") == up_features
    # config record: task, stage, round, exchange (int64 each), profile (bool); no hydra
    # experiment / overrides strings any more
    cfg_bytes = len("rgbd_supervised") + len("finetune") + 8 + 8 + 1
    plan_bytes = 30 * 8 + 4 * 4 * 8  # sample IDs + (sizes, aug, noise, index) per batch
    assert led.total("bytes", round=1, stage="finetune", kind="control") == clients * (
        3 * cfg_bytes + plan_bytes
    )
    # evaluation: one message per client with the 10 test IDs, ẑ of 10 samples back
    eval_cfg = cfg_bytes - 8  # no exchange counter
    assert led.total("bytes", round=1, stage="eval", direction="down") == clients * (
        eval_cfg + 10 * 8 + 4 * 8
    )
    assert led.total("bytes", round=1, stage="eval", direction="up") == clients * 10 * reals * 4
    assert led.total("channel_uses", round=1, stage="eval") == clients * 10 * k
    # every message sent (discovery, 3 training exchanges, 1 evaluation; per client) has a row
    down_rows = [r for r in led.rows if r.direction == "down" and r.kind == "control"]
    assert len(down_rows) == grid.messages_sent == clients * (1 + 3 + 1)
    row = strategy.history[0]
    assert row["up_bytes"] == led.total("bytes", direction="up")
    assert row["channel_uses"] == clients * 40 * k


class _FailingClient(ClientTask):
    """The ``split_supervised`` device, failing in training on partition 1."""

    def __init__(self, inner: ClientTask, partition_id: int) -> None:
        self.inner, self.partition_id = inner, partition_id
        self.model, self.role = inner.model, inner.role

    def inputs(self, batch: BatchPlan, train: bool) -> tuple[torch.Tensor, ...]:
        if self.partition_id == 1 and train:
            raise ValueError("deliberate failure in the depth client")
        return self.inner.inputs(batch, train)

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return self.inner.make_optimizer(params)


def _failing(context: Context, params: Any) -> ClientTask:
    cfg, pid = node_config_of(context, SUPERVISED_CLIENT_TASK, params)
    return _FailingClient(supervised_device(cfg, pid), pid)


def test_a_client_error_reply_is_logged_with_client_and_action(
    caplog: pytest.LogCaptureFixture,
) -> None:
    strategy = _strategy(client_task="test_failing")
    app = add_split_client(ClientApp(), {"test_failing": _failing})
    with (
        caplog.at_level(logging.ERROR, logger="flwr"),
        pytest.raises(ClientError, match="partition 1, depth"),
    ):
        strategy.start(_grid(app=app))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "node 1001 (partition 1, depth)" in m
        and "train.split_step" in m
        and "deliberate failure in the depth client" in m
        for m in errors
    ), errors


class _SilentGrid(InProcessGrid):
    """Node 1001 never answers ``train.split_step``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lost: set[str] = set()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        msgs = list(messages)
        ids = list(super().push_messages(msgs))
        for m, i in zip(msgs, ids):
            if m.metadata.message_type == TRAIN_STEP and m.metadata.dst_node_id == 1001:
                self._lost.add(i)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return super().pull_messages([i for i in message_ids if i not in self._lost])


def test_a_missing_reply_times_out_naming_the_client() -> None:
    overrides = f"{OVERRIDES} strategy.timeout=0.2"
    strategy = _strategy(overrides)
    with pytest.raises(
        TimeoutError,
        match=r"train.split_step: no reply within timeout=0.2 s "
        r"from node 1001 \(partition 1, depth\)",
    ):
        strategy.start(_grid(overrides, _SilentGrid))
