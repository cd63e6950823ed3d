"""An in-process Flower ``Grid``: run a ServerApp's logic against a ClientApp in one process.

For unit and integration tests of strategies and client handlers without a simulation
engine (no Ray, no SuperLink), and for debugging a run step by step. Each node keeps its own
``Context`` (with its own ``state``), exactly as the engines do; a message is handled when it
is pushed, so replies are available to the next ``pull_messages``.
"""

from __future__ import annotations

import itertools
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

SERVER_NODE_ID = 1


class InProcessGrid(Grid):
    """A ``Grid`` whose nodes are ClientApp calls in this process.

    Parameters
    ----------
    client_app:
        The ClientApp to call for every message.
    node_configs:
        One ``node_config`` per node (e.g. ``{"partition-id": 0, "num-partitions": 2}``).
    run_config:
        The run config every context sees (``experiment``, ``overrides``).
    """

    def __init__(
        self,
        client_app: ClientApp,
        node_configs: Sequence[Mapping[str, Any]],
        run_config: Mapping[str, Any] | None = None,
        run_id: int = 1,
    ) -> None:
        self._app = client_app
        self._run_id = run_id
        self._run_config = dict(run_config or {})
        self.contexts: dict[int, Context] = {}
        for i, node_config in enumerate(node_configs):
            node_id = 1000 + i
            self.contexts[node_id] = Context(
                run_id=run_id,
                node_id=node_id,
                node_config=dict(node_config),
                state=RecordDict(),
                run_config=dict(self._run_config),
            )
        self._replies: dict[str, Message] = {}
        self._ids = itertools.count(1)
        self.messages_sent = 0
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SERVER_NODE_ID
        TaskIdentity.task_id = 1

    def set_run(self, run: Any) -> None:  # pragma: no cover - not used in-process
        pass

    @property
    def run(self) -> Any:  # pragma: no cover - not used in-process
        return None

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def server_context(self) -> Context:
        """A server-side Context with the same run config."""
        return Context(
            run_id=self._run_id,
            node_id=SERVER_NODE_ID,
            node_config={},
            state=RecordDict(),
            run_config=dict(self._run_config),
        )

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg_id = f"m{next(self._ids)}"
            meta = msg.metadata.__dict__  # Metadata has read-only properties
            meta["_message_id"] = msg_id
            meta["_src_node_id"] = SERVER_NODE_ID
            meta["_created_at"] = time.time()
            ctx = self.contexts[msg.metadata.dst_node_id]
            self.messages_sent += 1
            try:
                reply = self._app(msg, ctx)
            except Exception as err:  # mirror the engines: an error reply, not a crash
                reason = "".join(traceback.format_exception_only(type(err), err)).strip()
                reply = Message(Error(code=2, reason=reason), reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = msg.metadata.dst_node_id
            self._replies[msg_id] = reply
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        out = []
        for msg_id in message_ids:
            if msg_id in self._replies:
                out.append(self._replies.pop(msg_id))
        return out

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))
