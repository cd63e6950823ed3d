"""Shared by the tests that call the split client handlers directly (test_split_client.py,
test_warm_state.py): the tiny ``split_supervised`` setup, a node's context and a message."""

from __future__ import annotations

from _messages import received  # tests/ is on sys.path
from flwr.app import Context, Message, RecordDict

from flwr_semcom.paper1.factory import client_task_factories
from flwr_semcom.split.client import split_actions

#: 40 scenes of 8 px, 4 symbols, batch 4: the smallest split_supervised that trains
OVERRIDES = (
    "data.num_samples=40 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=4"
)
TASK = "rgbd_supervised"
NODE = 7
ACTIONS = split_actions(client_task_factories())


def run_config(overrides: str = OVERRIDES) -> dict[str, bool | float | int | str]:
    return {"experiment": "split_supervised", "overrides": overrides}


def node_context(run_id: int, overrides: str = OVERRIDES) -> Context:
    """Node :data:`NODE` serving partition 0 of 2, with an empty state."""
    return Context(
        run_id=run_id,
        node_id=NODE,
        node_config={"partition-id": 0, "num-partitions": 2},
        state=RecordDict(),
        run_config=run_config(overrides),
    )


def to_node(content: RecordDict, message_type: str) -> Message:
    """A message from the server to node :data:`NODE`."""
    return received(content, message_type, dst=NODE)
