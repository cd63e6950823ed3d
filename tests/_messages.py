"""Shared by the unit tests: a Message as a ClientApp handler or a strategy receives it."""

from __future__ import annotations

import time

from flwr.app import Message, Metadata, RecordDict


def received(
    content: RecordDict,
    message_type: str,
    *,
    src: int = 1,
    dst: int = 1,
    message_id: str | None = None,
    reply_to: str = "x",
    group_id: str = "1",
) -> Message:
    """A Message of run 1 from node ``src`` to node ``dst`` (a 600 s TTL, created now).

    ``message_id`` defaults to a fresh ``m<monotonic ns>``.
    """
    meta = Metadata(
        run_id=1,
        message_id=f"m{time.monotonic_ns()}" if message_id is None else message_id,
        src_node_id=src,
        dst_node_id=dst,
        reply_to_message_id=reply_to,
        group_id=group_id,
        created_at=time.time(),
        ttl=600.0,
        message_type=message_type,
    )
    return Message(content=content, metadata=meta)  # type: ignore[call-overload]
