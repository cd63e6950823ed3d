"""Client failure policy and test-only fault injection (issue #9, part B; docs/reliability.md).

Config group ``reliability`` (``conf/config.yaml``):

``on_failure``
    What the split strategy does when a client answers with an error or does not answer
    within ``strategy.timeout`` seconds:

    - ``abort`` (default): stop the run with one ERROR line naming node, partition, role,
      round, action and policy; every completed round stays in ``metrics.csv``. Split
      learning with S = 1 is exact only when every device takes part in every step, so a
      researcher gets a failed run, never a silently different one.
    - ``skip``: drop the device for the rest of the round. Its uplink is zero-filled (ẑ = 0,
      as in modality dropout) for the remaining batches and the evaluation of that round, it
      gets no gradients, and it is asked again from the next round's first exchange.
    - ``wait``: re-send the failed message up to ``retries`` times (an error reply leaves the
      client's state unchanged in both engines, so a re-send is safe), each time waiting up to
      ``strategy.timeout``; then abort.
``retries``
    Re-sends per failed message under ``wait``.
``checkpoint_every``
    Save a checkpoint (server, every client, ledger, metrics, RNG) every N rounds; 0 = never.
``resume``
    A results folder to continue (set by ``semcom-run --resume DIR``); null = a new run.
``fault``
    Test-only fault injection: partition ``fault.partition`` fails its ``train.split_step``
    of round ``fault.round``, exchange ``fault.exchange``: ``kind: raise`` raises, ``kind:
    vanish`` sleeps ``fault.vanish_s`` seconds first (never answers in time) and then raises.
    ``fault.attempts`` limits the fault to the first N attempts of that message (null = all).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flwr_semcom.rules import Rule, add_rules, float_range, int_range, one_of, optional

__all__ = ["POLICIES", "RELIABILITY_RULES", "FailurePolicy", "InjectedFaultError", "maybe_inject"]

POLICIES = ("abort", "skip", "wait")

RELIABILITY_RULES: dict[str, Rule] = {
    "reliability.on_failure": one_of(*POLICIES),
    "reliability.retries": int_range(0, 100),
    "reliability.checkpoint_every": int_range(0, 100_000),
    "reliability.resume": Rule(
        lambda v: v is None or (isinstance(v, str) and v != ""), "a results folder or null"
    ),
    "reliability.fault.partition": optional(int_range(0, 100_000)),
    "reliability.fault.round": optional(int_range(1, 100_000)),
    "reliability.fault.exchange": int_range(0, 1_000_000),
    "reliability.fault.kind": one_of("raise", "vanish"),
    "reliability.fault.vanish_s": float_range(0.0, 86_400.0),
    "reliability.fault.attempts": optional(int_range(1, 100)),
}

add_rules(RELIABILITY_RULES)


class InjectedFaultError(RuntimeError):
    """The test-only fault of ``reliability.fault`` fired."""


@dataclass(frozen=True)
class FailurePolicy:
    """What a strategy does when a client fails: policy, re-sends, checkpoint period.

    Parameters
    ----------
    on_failure
        ``"abort"``, ``"skip"`` or ``"wait"`` (module docstring).
    retries
        Re-sends of a failed message under ``wait`` (>= 0).
    checkpoint_every
        Checkpoint period in rounds for the runners (0 = never).
    """

    on_failure: str = "abort"
    retries: int = 0
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        if self.on_failure not in POLICIES:
            raise ValueError(
                f"on_failure: {self.on_failure!r} unknown; valid: {', '.join(POLICIES)}"
            )
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries: {self.retries!r} invalid; expected an integer >= 0")
        every = self.checkpoint_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"checkpoint_every: {every!r} invalid; expected an integer >= 0")

    @classmethod
    def from_config(cls, cfg: Any) -> FailurePolicy:
        """The policy of a composed config's ``reliability`` group (defaults if absent)."""
        rel: Any = cfg.get("reliability")
        if rel is None:
            return cls()
        return cls(
            on_failure=str(rel.get("on_failure", "abort")),
            retries=int(rel.get("retries", 0)),
            checkpoint_every=int(rel.get("checkpoint_every", 1)),
        )


def maybe_inject(cfg: Any, partition_id: int, round_: int, exchange: int, attempt: int) -> None:
    """Raise (or sleep, then raise) when ``reliability.fault`` targets this message.

    Called by the client handler before it touches ``context.state``, so a failed attempt
    leaves the client exactly as it was.
    """
    rel: Any = cfg.get("reliability")
    fault: Any = None if rel is None else rel.get("fault")
    if fault is None or fault.get("partition") is None or fault.get("round") is None:
        return
    if (int(fault.partition), int(fault.round), int(fault.get("exchange", 0))) != (
        partition_id,
        round_,
        exchange,
    ):
        return
    attempts = fault.get("attempts")
    if attempts is not None and attempt >= int(attempts):
        return
    where = f"partition {partition_id}, round {round_}, exchange {exchange}, attempt {attempt}"
    if str(fault.kind) == "vanish":
        time.sleep(float(fault.vanish_s))
        raise InjectedFaultError(f"injected fault 'vanish' ({where}) woke up after the timeout")
    raise InjectedFaultError(f"injected fault 'raise' ({where})")
