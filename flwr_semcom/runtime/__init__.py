"""Runtime services shared by every strategy: the messaging layer (:mod:`.messaging`)."""

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
