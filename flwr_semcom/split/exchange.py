"""Deprecated: moved to :mod:`flwr_semcom.runtime.messaging` (kept while callers migrate)."""

from flwr_semcom.runtime.messaging import ClientError as SplitClientError
from flwr_semcom.runtime.messaging import ClientInfo, Failure, collect
from flwr_semcom.runtime.messaging import send as exchange

__all__ = ["ClientInfo", "Failure", "SplitClientError", "collect", "exchange"]
