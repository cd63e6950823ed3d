"""Recovery time of paper 2 (Sec. IV, "Recovery time"): how long re-alignment takes.

Choi et al., arXiv 2310.09394: the recovery time is the end-to-end latency of SLF steps 1-3,

.. math::

    T_\\mathrm{rec} = \\frac{8 B_\\mathrm{down}}{R_\\mathrm{DL}}
                    + \\frac{F_\\mathrm{fine-tune}}{C_\\mathrm{device}}
                    + \\frac{8 B_\\mathrm{up}}{R_\\mathrm{UL}},

with the downloaded and uploaded bytes ``B``, the link rates ``R`` (Mbps), the FLOPs ``F`` of
the actual fine-tuning (counted with ``torch.utils.flop_counter``) and the transmitter's
compute ``C`` (TFLOPS). The paper's rates and TFLOPS were lost in conversion; ours are
``strategy.recovery`` in ``conf/strategy/slf.yaml``. For the FedAvg baseline the same model
is applied per round, with both clients' links and compute working in parallel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RecoveryModel"]


@dataclass(frozen=True)
class RecoveryModel:
    """Link rates and device compute of the recovery-time model.

    Parameters
    ----------
    dl_mbps, ul_mbps
        Downlink (receiver → transmitter) and uplink rates in Mbit/s (> 0).
    device_tflops
        Sustained compute of the transmitter in TFLOP/s (> 0).
    """

    dl_mbps: float
    ul_mbps: float
    device_tflops: float

    def __post_init__(self) -> None:
        for name in ("dl_mbps", "ul_mbps", "device_tflops"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value}")

    def download_s(self, nbytes: int) -> float:
        """Seconds to download ``nbytes`` at ``dl_mbps``."""
        return 8.0 * nbytes / (self.dl_mbps * 1e6)

    def upload_s(self, nbytes: int) -> float:
        """Seconds to upload ``nbytes`` at ``ul_mbps``."""
        return 8.0 * nbytes / (self.ul_mbps * 1e6)

    def compute_s(self, flops: float) -> float:
        """Seconds to execute ``flops`` at ``device_tflops``."""
        return float(flops) / (self.device_tflops * 1e12)

    def slf(self, download_bytes: int, flops: float, upload_bytes: int) -> float:
        """SLF recovery time: download + fine-tuning compute + upload (steps 1-3)."""
        return self.download_s(download_bytes) + self.compute_s(flops) + self.upload_s(upload_bytes)
