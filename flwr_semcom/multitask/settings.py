"""Validation and typed access for the multi-task experiment (``conf/experiment/multitask.yaml``).

Paper 3 (arXiv 2501.02006). Every key of the ``multitask`` group has a rule (registered with
:func:`flwr_semcom.config.add_rules` on import; checked whenever the group is present), and
:func:`check_multitask_config` adds the checks that span several keys (tasks against the
data set, loss weights against tasks, bandwidth ratios against the node map size, heads
against node channels, the channel). The cross-key checks are also registered with
:func:`flwr_semcom.config.add_check`, so ``semcom-run`` rejects a bad combination before any
Flower process starts. Every failure is a one-line :class:`~flwr_semcom.config.ConfigError`
naming the key and the valid range.

This module is the experiment's hydra edge: :func:`settings_from_config` translates a
composed config into the typed :class:`~flwr_semcom.multitask.spec.MultitaskSettings` that
everything else takes, and :func:`settings_for_run` does it once per Flower run config (cached
per process, for the ClientApp's handlers).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flwr_semcom.config import (
    ConfigError,
    Rule,
    add_check,
    add_rules,
    config_from_run_config,
    float_range,
    int_range,
    one_of,
    project_root,
)
from flwr_semcom.data import resolve_data_root
from flwr_semcom.multitask.spec import (
    SOURCE_DIMS,
    DataSpec,
    LinkSpec,
    LocalTraining,
    MultitaskSettings,
    ratio_label,
)
from flwr_semcom.multitask.system import METHODS, split_symbols, symbols_for_ratio
from flwr_semcom.multitask.tasks import TASKS

__all__ = [
    "DATASET_TASKS",
    "RULES",
    "check_multitask_config",
    "ratio_label",
    "settings_for_run",
    "settings_from_config",
]

#: Tasks each data set can serve (the target must exist in its items).
DATASET_TASKS = {
    "synthetic_rgbd": ("classification", "depth"),
    "cifar10": ("classification", "reconstruction"),
}


def _is_num(v: Any) -> bool:
    return float_range().check(v)


def _list_of(check: Any, valid: str, *, unique: bool = False) -> Rule:
    def ok(v: Any) -> bool:
        if not isinstance(v, list) or not v or not all(check(x) for x in v):
            return False
        return not unique or len(set(v)) == len(v)

    return Rule(ok, valid)


_POS_INT = int_range(1, 1_000_000)
RULES: dict[str, Rule] = {
    "multitask.dataset": one_of(*DATASET_TASKS),
    "multitask.tasks": _list_of(
        lambda v: v in TASKS,
        "a non-empty list of distinct names from " + ", ".join(TASKS),
        unique=True,
    ),
    "multitask.loss_weights": _list_of(
        lambda v: _is_num(v) and v >= 0, "a non-empty list of numbers >= 0 (one per task)"
    ),
    "multitask.methods": _list_of(
        lambda v: v in METHODS,
        "a non-empty list of distinct names from " + ", ".join(METHODS),
        unique=True,
    ),
    "multitask.bandwidth_ratios": _list_of(
        lambda v: _is_num(v) and 0 < v <= 1,
        "a non-empty list of distinct numbers in (0, 1]",
        unique=True,
    ),
    "multitask.train_snr_db": Rule(
        lambda v: (
            isinstance(v, list) and len(v) == 2 and all(_is_num(x) for x in v) and v[0] <= v[1]
        ),
        "[low, high] in dB with low <= high",
    ),
    "multitask.num_samples": int_range(20, 1_000_000),
    "multitask.test_fraction": float_range(0.0, 0.9, lo_open=True),
    "multitask.val_fraction": float_range(0.0, 0.5),  # share of the training part
    "multitask.cifar_per_class": int_range(2, 1000),
    "multitask.num_devices": int_range(1, 1000),
    "multitask.rounds": int_range(1, 10_000),
    "multitask.local_epochs": int_range(1, 1000),
    "multitask.batch_size": int_range(2, 65536),
    "multitask.lr": float_range(0.0, 1.0, lo_open=True),
    "multitask.eval_batch_size": _POS_INT,
    "multitask.timeout": float_range(0.0, None, lo_open=True),
    "multitask.encoder.widths": Rule(
        lambda v: (
            isinstance(v, list) and len(v) == 4 and all(int_range(1, 4096).check(x) for x in v)
        ),
        "a list of 4 stage widths, integers in [1, 4096]",
    ),
    "multitask.encoder.blocks_per_stage": int_range(1, 8),
    "multitask.gai.node_channels": int_range(1, 4096),
    "multitask.gai.heads": int_range(1, 64),
    "multitask.gai.iterations": int_range(0, 16),
    "multitask.gai.relation_hidden": int_range(1, 65536),
    "multitask.decoder_hidden": int_range(4, 4096),
}
add_rules(RULES)

_MISSING = object()


def check_multitask_config(cfg: DictConfig) -> None:
    """Validate the ``multitask`` group and its cross-key consistency.

    Raises
    ------
    ConfigError
        One line naming the key, the value and the valid range.
    """
    if "multitask" not in cfg:
        raise ConfigError("multitask: missing; select experiment=multitask")
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            raise ConfigError(f"{key}: missing; expected {rule.valid}")
        if isinstance(value, DictConfig) or OmegaConf.is_list(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not rule.check(value):
            raise ConfigError(f"{key}: invalid value {value!r}; expected {rule.valid}")
    m = cfg.multitask
    tasks = list(m.tasks)
    allowed = DATASET_TASKS[str(m.dataset)]
    for t in tasks:
        if t not in allowed:
            raise ConfigError(
                f"multitask.tasks: {t!r} needs targets {m.dataset} does not have; valid for "
                f"{m.dataset}: {', '.join(allowed)}"
            )
    if len(m.loss_weights) != len(tasks):
        raise ConfigError(
            f"multitask.loss_weights: expected one weight per task ({len(tasks)}), "
            f"got {len(m.loss_weights)}"
        )
    if not any(float(w) > 0 for w in m.loss_weights):
        raise ConfigError(
            "multitask.loss_weights: all weights are 0 (the loss has no gradient); expected "
            "numbers >= 0, not all 0, one per task"
        )
    if int(m.gai.node_channels) % int(m.gai.heads):
        raise ConfigError(
            f"multitask.gai.heads: must divide multitask.gai.node_channels "
            f"({m.gai.node_channels}), got {m.gai.heads}"
        )
    area = 4 * 4  # node maps are the last block's 4x4 (32 px input, three stride-2 stages)
    for r in m.bandwidth_ratios:
        k = symbols_for_ratio(float(r), SOURCE_DIMS)
        if k < len(tasks) or any((2 * k_t) % area for k_t in split_symbols(k, len(tasks))):
            raise ConfigError(
                f"multitask.bandwidth_ratios: R={float(r):g} gives k={k} channel uses; each "
                f"task's 2k/T reals must fill whole 4x4 maps (2k/T a multiple of {area}), "
                "e.g. R in {1/4, 1/6, 1/12, 1/24}"
            )
    if str(cfg.channel.name) != "awgn":
        raise ConfigError(
            f"channel.name: the multi-task link is evaluated over AWGN (paper 3), expected "
            f"'awgn', got {cfg.channel.name!r}"
        )
    snrs = cfg.channel.get("snr_db")
    if not OmegaConf.is_list(snrs) or len(snrs) == 0:
        raise ConfigError(
            f"channel.snr_db: the multi-task experiment needs a list of evaluation SNRs in dB, "
            f"e.g. [-2, 14], got {snrs!r}"
        )


def _check_when_present(cfg: DictConfig) -> None:
    """Cross-key checks at composition (before any Flower process) for configs with the group."""
    if "multitask" in cfg:
        check_multitask_config(cfg)


add_check(_check_when_present)


def settings_from_config(cfg: DictConfig) -> MultitaskSettings:
    """Validate ``cfg`` (:func:`check_multitask_config`) and translate it into typed settings."""
    check_multitask_config(cfg)
    m = cfg.multitask
    root = ""
    if str(m.dataset) == "cifar10":
        root = str(resolve_data_root(cfg.paths.get("data_root"), project_root(cfg)))
    low, high = (float(s) for s in m.train_snr_db)
    return MultitaskSettings(
        link=LinkSpec(
            tasks=tuple(str(t) for t in m.tasks),
            widths=tuple(int(w) for w in m.encoder.widths),
            blocks_per_stage=int(m.encoder.blocks_per_stage),
            node_channels=int(m.gai.node_channels),
            heads=int(m.gai.heads),
            iterations=int(m.gai.iterations),
            relation_hidden=int(m.gai.relation_hidden),
            decoder_hidden=int(m.decoder_hidden),
        ),
        data=DataSpec(
            dataset=str(m.dataset),
            num_samples=int(m.num_samples),
            test_fraction=float(m.test_fraction),
            cifar_per_class=int(m.cifar_per_class),
            data_root=root,
            seed=int(cfg.seed),
            val_fraction=float(m.get("val_fraction", 0.0)),
        ),
        local=LocalTraining(
            epochs=int(m.local_epochs),
            batch_size=int(m.batch_size),
            lr=float(m.lr),
            loss_weights=tuple(float(w) for w in m.loss_weights),
            train_snr_db=(low, high),
            eval_snr_db=tuple(float(s) for s in cfg.channel.snr_db),
            eval_batch_size=int(m.eval_batch_size),
        ),
        methods=tuple(str(x) for x in m.methods),
        bandwidth_ratios=tuple(float(r) for r in m.bandwidth_ratios),
        num_devices=int(m.num_devices),
        rounds=int(m.rounds),
        timeout=float(m.timeout),
        seed=int(cfg.seed),
        num_threads=int(cfg.num_threads),
    )


@lru_cache(maxsize=8)
def _settings(items: tuple[tuple[str, Any], ...]) -> MultitaskSettings:
    return settings_from_config(config_from_run_config(dict(items)))


def settings_for_run(run_config: Mapping[str, Any]) -> MultitaskSettings:
    """The typed settings of a Flower run config, composed once per process and run config."""
    return _settings(tuple(sorted(run_config.items())))
