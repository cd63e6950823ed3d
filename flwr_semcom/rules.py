"""Validation rules for config values: the generic, hydra-free half of the config layer.

A :class:`Rule` checks one dotted key and describes its valid range for error messages;
modules that own config keys register their rules with :func:`add_rules` and cross-key checks
with :func:`add_check`. :mod:`flwr_semcom.config` (the edge: hydra composition) applies them.
This module imports neither hydra nor any paper package, so the generic library can use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHECKS",
    "RULES",
    "ConfigError",
    "Rule",
    "add_check",
    "add_rules",
    "device_rule",
    "float_range",
    "if_present",
    "int_list",
    "int_range",
    "one_of",
    "optional",
    "resolve_device",
]


class ConfigError(ValueError):
    """An invalid configuration key or value (one line: key, value, valid range)."""


@dataclass(frozen=True)
class Rule:
    """A check for one config key; ``valid`` describes the accepted range for messages."""

    check: Callable[[Any], bool]
    valid: str
    required: bool = True


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def int_range(lo: int | None = None, hi: int | None = None) -> Rule:
    lo_s = "-inf" if lo is None else str(lo)
    hi_s = "inf" if hi is None else str(hi)
    return Rule(
        lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi),
        f"an integer in [{lo_s}, {hi_s}]",
    )


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Rule:
    def check(v: Any) -> bool:
        if not _is_num(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return not (hi is not None and v > hi)

    left = "(" if lo_open else "["
    lo_s = "-inf" if lo is None else f"{lo:g}"
    hi_s = "inf" if hi is None else f"{hi:g}"
    return Rule(check, f"a finite number in {left}{lo_s}, {hi_s}]")


def one_of(*choices: Any) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.check(v), rule.valid + " or null")


def if_present(rule: Rule) -> Rule:
    """``rule`` for a key only some groups have (checked where present, not required)."""
    return Rule(rule.check, rule.valid, required=False)


def int_list(lo: int) -> Rule:
    """A non-empty list of integers ``>= lo``, checked where present."""
    return Rule(
        lambda v: isinstance(v, list) and len(v) >= 1 and all(_is_int(x) and x >= lo for x in v),
        f"a non-empty list of integers >= {lo}",
        required=False,
    )


def device_rule() -> Rule:
    def check(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        if v in ("auto", "cpu", "cuda"):
            return True
        return v.startswith("cuda:") and v[5:].isdigit()

    return Rule(check, "'auto', 'cpu', 'cuda' or 'cuda:N'")


#: Every registered rule: dotted key -> :class:`Rule` (filled by :func:`add_rules`).
RULES: dict[str, Rule] = {}


def add_rules(rules: Mapping[str, Rule]) -> None:
    """Register validation rules for keys of a config group owned by another module."""
    RULES.update(rules)


#: Checks that span several keys (``check(cfg)`` raises :class:`ConfigError`), registered by
#: the modules of :data:`RULE_MODULES` with :func:`add_check` and run after the rules, so that
#: e.g. a freeze depth beyond the model fails at composition (in the launcher), not in a run.
CHECKS: list[Callable[[Any], None]] = []


def add_check(check: Callable[[Any], None]) -> None:
    """Register a cross-key check (once); it must return quietly for configs it does not own."""
    if check not in CHECKS:
        CHECKS.append(check)


def resolve_device(setting: str) -> str:
    """Map the ``device`` setting to a torch device string; 'cuda' without a GPU is an error."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {setting!r} requested but torch sees no CUDA GPU; valid here: 'auto', 'cpu'"
        )
    return setting
