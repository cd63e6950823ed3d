"""The ``strategy`` keys of split learning (``conf/strategy/split.yaml``): rules and their
translation into the typed arguments of :class:`~strategies.split_training.SplitTraining`.

The rules are registered with :func:`flwr_semcom.rules.add_rules` when :mod:`flwr_semcom.split`
is imported. The keys are optional for the config tree as a whole (other strategies do not
have them); :func:`check_split_config` requires them when a split-learning run starts, and
:func:`split_kwargs` turns a composed config into plain keyword arguments (the edge's one
translation; no config object goes further).
"""

from __future__ import annotations

from typing import Any

from flwr_semcom.reliability import FailurePolicy
from flwr_semcom.rules import ConfigError, Rule, add_check, float_range, int_range, resolve_device

__all__ = [
    "SERVER_GRADIENTS",
    "SPLIT_RULES",
    "check_lr_min",
    "check_split_config",
    "schedule_kwargs",
    "server_gradients",
    "split_kwargs",
]


def _optional(rule: Rule) -> Rule:
    return Rule(rule.check, rule.valid, required=False)


def _name_rule() -> Rule:
    return Rule(lambda v: isinstance(v, str) and v != "", "a registered name", required=False)


#: Where the server evaluates the gradients it returns for a group of S batches
#: (docs/schedules.md): ``step`` at the weights of each batch's step (φ_{t-1}),
#: ``group_end`` at the group's final weights φ_S.
SERVER_GRADIENTS = ("step", "group_end")

SPLIT_RULES: dict[str, Rule] = {
    "strategy.rounds": _optional(int_range(1, 100_000)),
    "strategy.batch_size": _optional(int_range(2, 1_000_000)),
    "strategy.steps_per_message": _optional(int_range(1, 100_000)),
    "strategy.lr": _optional(float_range(0.0, 100.0, lo_open=True)),
    "strategy.lr_schedule": Rule(
        lambda v: v in ("constant", "cosine"), "one of constant, cosine", required=False
    ),
    "strategy.lr_min": _optional(float_range(0.0, 100.0)),
    "strategy.momentum": Rule(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0,
        "a number in [0, 1)",
        required=False,
    ),
    "strategy.weight_decay": _optional(float_range(0.0, 1.0)),
    "strategy.poll_interval": _optional(float_range(0.0, 10.0, lo_open=True)),
    "strategy.timeout": _optional(float_range(0.0, None, lo_open=True)),
    "strategy.eval_batch_size": _optional(int_range(1, 1_000_000)),
    "strategy.eval_batches_per_message": _optional(int_range(0, 1_000_000)),
    "strategy.augment": Rule(lambda v: isinstance(v, bool), "true or false", required=False),
    "strategy.drop_last": Rule(lambda v: isinstance(v, bool), "true or false", required=False),
    "strategy.profile": Rule(lambda v: isinstance(v, bool), "true or false", required=False),
    "strategy.server_task": _name_rule(),
    "strategy.node_wait": _optional(float_range(0.0, None, lo_open=True)),
    "strategy.schedule": Rule(
        lambda v: v in ("exact", "replay"), "one of exact, replay", required=False
    ),
    "strategy.schedule_compensation": _optional(float_range(0.0, 1000.0)),
    "strategy.server_gradients": Rule(
        lambda v: v in SERVER_GRADIENTS, "one of " + ", ".join(SERVER_GRADIENTS), required=False
    ),
}

REQUIRED = (
    "rounds",
    "batch_size",
    "steps_per_message",
    "lr",
    "momentum",
    "weight_decay",
    "poll_interval",
    "timeout",
    "eval_batch_size",
    "eval_batches_per_message",
    "server_task",
)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_lr_min(cfg: Any) -> None:
    """``strategy.lr_min`` at most ``strategy.lr`` (else the cosine schedule would rise);
    quiet when either key is absent or not a number (its own rule reports that)."""
    strategy: Any = cfg.get("strategy")
    if strategy is None or "lr" not in strategy or "lr_min" not in strategy:
        return
    lr, lr_min = strategy["lr"], strategy["lr_min"]
    if _number(lr) and _number(lr_min) and lr_min > lr:
        raise ConfigError(
            f"strategy.lr_min: {lr_min} is above strategy.lr ({lr}); expected a number in "
            "[0, strategy.lr]"
        )


add_check(check_lr_min)


def check_split_config(cfg: Any) -> None:
    """Require the split-learning keys of a composed config and check them; ``ConfigError``
    (one line: key, value, valid range)."""
    strategy: Any = cfg.get("strategy")
    if strategy is None:
        raise ConfigError("strategy: missing; expected the split strategy group (strategy=split)")
    for key in REQUIRED:
        if key not in strategy:
            rule = SPLIT_RULES[f"strategy.{key}"]
            raise ConfigError(f"strategy.{key}: missing; expected {rule.valid}")
    for dotted, rule in SPLIT_RULES.items():
        key = dotted.split(".", 1)[1]
        if key in strategy and not rule.check(strategy[key]):
            raise ConfigError(f"{dotted}: invalid value {strategy[key]!r}; expected {rule.valid}")
    check_lr_min(cfg)


def split_kwargs(cfg: Any) -> dict[str, Any]:
    """Keyword arguments of ``SplitTraining`` from a composed config (checked first).

    ``rounds``, ``batch_size``, ``steps_per_message``, ``eval_batch_size``,
    ``eval_batches_per_message``, ``poll_interval``, ``timeout``, ``node_wait``,
    ``drop_last``, ``profile``, ``schedule``, ``compensation``, ``server_gradients`` (from
    ``strategy``), ``seed``,
    ``device`` (resolved) and ``failure_policy`` (from ``reliability``).
    """
    check_split_config(cfg)
    s: Any = cfg.strategy
    return {
        "rounds": int(s.rounds),
        "batch_size": int(s.batch_size),
        "steps_per_message": int(s.steps_per_message),
        "eval_batch_size": int(s.eval_batch_size),
        "eval_batches_per_message": int(s.eval_batches_per_message),
        "poll_interval": float(s.poll_interval),
        "timeout": float(s.timeout),
        "node_wait": float(s.get("node_wait", 120.0)),
        "drop_last": bool(s.get("drop_last", False)),
        "profile": bool(s.get("profile", False)),
        "seed": int(cfg.seed),
        "device": resolve_device(str(cfg.get("device", "cpu"))),
        "failure_policy": FailurePolicy.from_config(cfg),
        **schedule_kwargs(cfg),
        "server_gradients": server_gradients(cfg),
    }


def server_gradients(cfg: Any) -> str:
    """``strategy.server_gradients`` (default ``step``; docs/schedules.md), checked."""
    check_split_config(cfg)
    return str(cfg.strategy.get("server_gradients", "step"))


def schedule_kwargs(cfg: Any) -> dict[str, Any]:
    """The client-step schedule of S > 1 (docs/schedules.md) from a composed config:
    ``schedule`` (``strategy.schedule``, default ``exact``) and ``compensation``
    (``strategy.schedule_compensation``; 0 when absent), as keyword arguments of
    :func:`~flwr_semcom.split.reference.run_reference` and
    :func:`~flwr_semcom.split.compute.apply_gradients` (checked first)."""
    check_split_config(cfg)
    s: Any = cfg.strategy
    return {
        "schedule": str(s.get("schedule", "exact")),
        "compensation": float(s.get("schedule_compensation", 0.0)),
    }
