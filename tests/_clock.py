"""A fake ``time`` for tests of poll loops: ``monotonic`` advances only by ``sleep`` (or by
setting ``now``); every sleep is recorded in ``sleeps``."""

from __future__ import annotations


class FakeClock:
    """``time.monotonic`` / ``time.sleep`` of a clock that advances only by sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s
