"""Channel models (paper 1 eq. 2: AWGN / block Rayleigh fading; paper 2 eq. 2: K-ary DMC).

Registry ``CHANNELS`` (names ``awgn``, ``rayleigh``, ``dmc``, ``ideal``) and
:func:`build_channel`. Conventions are in ``docs/building-blocks.md``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from flwr_semcom.registry import Registry

from .base import (
    AnalogChannel,
    channel_uses,
    noise_variance,
    power_normalize,
    to_complex,
    to_real,
    validate_snr_db,
)
from .dmc import DiscreteMemorylessChannel

CHANNELS: Registry[nn.Module] = Registry("channel")
CHANNELS.register("dmc")(DiscreteMemorylessChannel)


def build_channel(name: str, **kwargs: Any) -> nn.Module:
    """Build the channel registered as ``name`` with constructor ``kwargs``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid names) or invalid arguments.
    """
    return CHANNELS.build(name, **kwargs)


__all__ = [
    "CHANNELS",
    "AnalogChannel",
    "DiscreteMemorylessChannel",
    "build_channel",
    "channel_uses",
    "noise_variance",
    "power_normalize",
    "to_complex",
    "to_real",
    "validate_snr_db",
]
