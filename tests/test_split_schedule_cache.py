"""benchmarks/split_schedule.py's run cache is keyed on the resolved config: spelling out a
default hits the same entry, a changed setting does not (a changed default in conf/ cannot
return a stale run)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import split_schedule  # noqa: E402


def test_cache_key_is_the_resolved_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_run(overrides: str, validation: bool) -> dict[str, Any]:
        calls.append(overrides)
        return {"final_accuracy": 0.5 + 0.01 * len(calls), "history": [], "wall_s": 0.0}

    monkeypatch.setattr(split_schedule, "one_run", fake_run)
    first = split_schedule.cached_run(tmp_path, "strategy.rounds=2", False)
    again = split_schedule.cached_run(tmp_path, "strategy.rounds=2 ", False)
    assert again["final_accuracy"] == first["final_accuracy"] and len(calls) == 1
    # the default S spelled out resolves to the same config: a hit, no new run
    cfg = split_schedule.compose_config("split_supervised", "")
    s_default = int(cfg.strategy.steps_per_message)
    split_schedule.cached_run(
        tmp_path, f"strategy.rounds=2 strategy.steps_per_message={s_default}", False
    )
    assert len(calls) == 1
    # another value, or the validation mode, is another entry
    split_schedule.cached_run(
        tmp_path, f"strategy.rounds=2 strategy.steps_per_message={s_default + 1}", False
    )
    split_schedule.cached_run(tmp_path, "strategy.rounds=2", True)
    assert len(calls) == 3
    assert len(list(tmp_path.glob("*.json"))) == 3
