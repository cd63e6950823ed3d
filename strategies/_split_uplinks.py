"""The uplinks a split strategy receives: unpacked per batch, counted, zero-filled when skipped.

A reply's ``"uplink"`` record holds one array per name with the batches of the exchange
concatenated along dim 0 (:mod:`flwr_semcom.split.protocol`). :class:`Uplinks` unpacks it once
(when the messaging layer asks for its channel uses, ``ServerTask.channel_uses`` per batch),
hands the per-batch tensors to the server steps, and remembers each client's shapes so that a
client skipped under ``on_failure=skip`` contributes ẑ = 0 (like a dropped modality).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from logging import ERROR
from typing import Any

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from flwr_semcom.runtime.messaging import ClientFailureError, ClientInfo, Messenger
from flwr_semcom.split.protocol import unpack_tensors
from flwr_semcom.split.tasks import ServerTask

__all__ = ["Uplinks", "copy_message", "deliver", "uplink_digest"]

Batches = list[dict[str, torch.Tensor]]


class Uplinks:
    """Per-client uplinks of the current exchange for ``server`` (on ``device``)."""

    def __init__(self, server: ServerTask, device: torch.device) -> None:
        self.server = server
        self.device = device
        #: per client, the shape (without the batch dimension) and dtype of each uplink tensor
        self.templates: dict[int, dict[str, tuple[tuple[int, ...], torch.dtype]]] = {}
        self._unpacked: dict[int, Batches] = {}

    def uses(
        self, targets: Sequence[int], sizes: list[int]
    ) -> Callable[[int, Message], Mapping[str, int]]:
        """For the messaging layer: the channel uses of the reply of ``targets[i]``'s uplink
        (the batches of ``sizes``; unpacked once and kept for :meth:`collect`)."""

        def uses(i: int, reply: Message) -> Mapping[str, int]:
            if "uplink" not in reply.content:
                return {}
            ups = unpack_tensors(reply.content.array_records["uplink"], sizes)
            self._unpacked[targets[i]] = ups
            return {"uplink": sum(self.server.channel_uses(u) for u in ups)}

        return uses

    def reply_uses(self, reply: Message, msg: Message) -> dict[str, int]:
        """The channel uses of ``reply``'s uplink for the plan of ``msg`` (a replay)."""
        if "uplink" not in reply.content or "plan" not in msg.content:
            return {}
        sizes = [int(s) for s in msg.content.array_records["plan"]["sizes"].numpy()]
        ups = unpack_tensors(reply.content.array_records["uplink"], sizes)
        return {"uplink": sum(self.server.channel_uses(u) for u in ups)}

    def collect(
        self, replies: Sequence[Message | None], sizes: list[int], who: Callable[[int], str]
    ) -> list[Batches]:
        """Every client's uplinks per batch (replies in client order; ``None`` = skipped,
        zero-filled); ``who(c)`` names client ``c`` in errors."""
        uplinks: list[Batches] = []
        for c, reply in enumerate(replies):
            if reply is None:
                uplinks.append(self.zeros(c, sizes, who))
                continue
            if "uplink" not in reply.content:
                raise RuntimeError(f"client {who(c)} sent no uplink")
            ups = self._unpacked.pop(c, None)
            if ups is None:
                ups = unpack_tensors(reply.content.array_records["uplink"], sizes)
            self.templates[c] = {k: (tuple(v.shape[1:]), v.dtype) for k, v in ups[0].items()}
            uplinks.append([{k: v.to(self.device) for k, v in u.items()} for u in ups])
        self._unpacked.clear()
        return uplinks

    def zeros(self, c: int, sizes: list[int], who: Callable[[int], str]) -> Batches:
        """ẑ = 0 for a skipped client, shaped as its last uplink."""
        template = self.templates.get(c)
        if template is None:
            msg = (
                f"client {who(c)} was skipped before it ever sent an uplink, so its features "
                "cannot be zero-filled; on_failure=skip needs one successful exchange per "
                "client first"
            )
            log(ERROR, "reliability: %s", msg)
            raise ClientFailureError(msg)
        return [
            {
                k: torch.zeros((n, *shape), dtype=dt, device=self.device)
                for k, (shape, dt) in template.items()
            }
            for n in sizes
        ]


def uplink_digest(reply: Message) -> str:
    """SHA-256 of a reply's ``"uplink"`` arrays (names and bytes; ``""`` without uplink)."""
    if "uplink" not in reply.content:
        return ""
    h = hashlib.sha256()
    rec = reply.content.array_records["uplink"]
    for name in sorted(rec):
        h.update(name.encode())
        h.update(rec[name].data)
    return h.hexdigest()


def copy_message(msg: Message, dst: int, **config: Any) -> Message:
    """``msg``'s records to node ``dst``, with ``config`` set in its ``"config"`` record."""
    content = RecordDict()
    for name, record in msg.content.items():
        content[name] = record
    if config:
        values = dict(msg.content.config_records["config"])
        values.update(config)
        content["config"] = ConfigRecord(values)
    meta = msg.metadata
    return Message(content, dst, meta.message_type, group_id=meta.group_id)


def deliver(
    messenger: Messenger,
    grid: Grid,
    clients: Sequence[ClientInfo],
    skipped: dict[int, str],
    msgs: Sequence[Message],
    uses: Callable[[Sequence[int], list[int]], Callable[[int, Message], Mapping[str, int]]],
    sizes: list[int],
    *,
    stage: str,
    round_: int,
    where: str,
) -> list[Message | None]:
    """Send one exchange's messages (one per client not in ``skipped``, in client order)
    under the messenger's failure policy; return the replies in client order, ``None`` for
    skipped clients. Newly skipped clients are added to ``skipped``; when every client is
    skipped the run stops (:class:`ClientFailureError`)."""
    targets = [c for c in range(len(clients)) if c not in skipped]
    replies, newly = messenger.deliver(
        grid,
        [(clients[c], m) for c, m in zip(targets, msgs)],
        stage=stage,
        round_=round_,
        where=where,
        uses=uses(targets, sizes),
    )
    out: list[Message | None] = [None] * len(clients)
    for c, reply in zip(targets, replies):
        out[c] = reply
    for i, reason in newly.items():
        skipped[targets[i]] = reason
    if newly and len(skipped) == len(clients):
        msg = f"every client failed in round {round_} ({where}); run aborted"
        log(ERROR, "reliability: %s", msg)
        raise ClientFailureError(msg)
    return out
