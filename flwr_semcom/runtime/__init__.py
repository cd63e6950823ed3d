"""Runtime services shared by every strategy: the messaging layer (:mod:`.messaging`); the
per-node worker (:mod:`.worker`) and its ClientApp relay (:mod:`.relay`).

The names of :mod:`.messaging` load on first use, so that importing :mod:`.relay` (what a
relaying ClientApp process needs) imports only the standard library and flwr.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flwr_semcom.runtime.messaging import (
        ClientError,
        ClientFailureError,
        ClientInfo,
        ClientTimeoutError,
        Failure,
        Messenger,
        collect,
        record_transfer,
        send,
    )

__all__ = [
    "ClientError",
    "ClientFailureError",
    "ClientInfo",
    "ClientTimeoutError",
    "Failure",
    "Messenger",
    "collect",
    "record_transfer",
    "send",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("flwr_semcom.runtime.messaging"), name)
    raise AttributeError(f"module 'flwr_semcom.runtime' has no attribute {name!r}")
