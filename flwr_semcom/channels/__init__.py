"""Channel models (paper 1 eq. 2: AWGN / block Rayleigh fading; paper 2 eq. 2: K-ary DMC).

Registry ``CHANNELS`` (names ``awgn``, ``rayleigh``, ``dmc``, ``ideal``) and
:func:`build_channel`. Conventions are in ``docs/building-blocks.md``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from flwr_semcom.registry import Registry

from .awgn import AWGNChannel
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
from .ideal import IdealChannel
from .rayleigh import RayleighChannel

CHANNELS: Registry[nn.Module] = Registry("channel")
CHANNELS.register("awgn")(AWGNChannel)
CHANNELS.register("rayleigh")(RayleighChannel)
CHANNELS.register("dmc")(DiscreteMemorylessChannel)
CHANNELS.register("ideal")(IdealChannel)


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
    "AWGNChannel",
    "AnalogChannel",
    "DiscreteMemorylessChannel",
    "IdealChannel",
    "RayleighChannel",
    "build_channel",
    "channel_uses",
    "noise_variance",
    "power_normalize",
    "to_complex",
    "to_real",
    "validate_snr_db",
]
