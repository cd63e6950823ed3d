"""The bundled ClientApp's SLF handlers: paper 2's devices (:mod:`flwr_semcom.slf.factory`)
behind the generic handlers of :func:`flwr_semcom.alignment.slf_handlers`."""

from __future__ import annotations

from flwr_semcom.alignment import slf_handlers
from flwr_semcom.slf.factory import device_from_context

__all__ = ["ACTIONS"]

ACTIONS = slf_handlers(device_from_context)
