"""The Flower run config: ``experiment``, ``overrides`` and kebab-case shortcut keys.

``[tool.flwr.app.config]`` in ``pyproject.toml`` declares every key Flower accepts in
``flwr run . --run-config "..."``:

- ``experiment``: a file of ``conf/experiment/``;
- ``overrides``: hydra overrides of any key of ``conf/`` (``"channel.snr_db=5 seed=3"``);
- the shortcut keys of :data:`RUN_KEYS` (``snr-db``, ``rounds``, ``seed``, ...), each setting
  one ``conf/`` key. Their declared value is the empty string, which means *unset*: an unset
  key overrides nothing, so ``conf/`` stays the one source of defaults.

A shortcut key sets the ``conf/`` key of the experiment's runner (``rounds`` is
``strategy.rounds`` for the split runners and ``multitask.rounds`` for paper 3); one that the
experiment does not use, a value of the wrong type, a value out of range and a key set twice
(shortcut and ``overrides``) fail with one :class:`~flwr_semcom.config.ConfigError` line that
names the shortcut key and the valid range. ``semcom-run`` and ``semcom-sweep`` take the same
``key=value`` words (:func:`cli_overrides`, :func:`sweep_overrides`).

Composition uses hydra, so this module belongs to the edge (launcher, ServerApp, the bundled
ClientApp's factories), like :mod:`flwr_semcom.config`.
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from omegaconf import DictConfig

from flwr_semcom.config import ConfigError, compose_config, split_overrides

#: The value of an unset shortcut key (what ``pyproject.toml`` declares).
UNSET = ""

_SPLIT = ("multimodal", "split_supervised")  # runners of paper 1 Stage II / split learning


@dataclass(frozen=True)
class RunKey:
    """A kebab-case run-config key and the ``conf/`` key it sets, per experiment runner."""

    name: str
    targets: Mapping[str, str]  # runner -> conf key; "*" = every runner
    kind: type  # int or float: the TOML type of the value
    meaning: str

    def target(self, runner: str) -> str | None:
        return self.targets.get(runner, self.targets.get("*"))


def _same(runners: Iterable[str], key: str) -> dict[str, str]:
    return dict.fromkeys(runners, key)


#: The shortcut keys, in README order. ``experiment`` and ``overrides`` are not here: they
#: select the experiment and carry free hydra overrides.
RUN_KEYS: dict[str, RunKey] = {
    k.name: k
    for k in (
        RunKey("snr-db", _same(_SPLIT, "channel.snr_db"), float, "channel SNR in dB"),
        RunKey(
            "rounds",
            {**_same(_SPLIT, "strategy.rounds"), "multitask": "multitask.rounds"},
            int,
            "training rounds (paper 1: Stage II)",
        ),
        RunKey("seed", {"*": "seed"}, int, "the run's seed"),
        RunKey(
            "steps-per-message",
            _same(_SPLIT, "strategy.steps_per_message"),
            int,
            "split-learning batches per message",
        ),
        RunKey(
            "label-fraction",
            _same(_SPLIT, "data.label_fraction"),
            float,
            "fraction of training scenes with labels",
        ),
        RunKey(
            "batch-size",
            {
                **_same(_SPLIT, "strategy.batch_size"),
                "multitask": "multitask.batch_size",
                "slf_table1": "strategy.batch_size",
            },
            int,
            "training batch size",
        ),
        RunKey(
            "lr",
            {**_same(_SPLIT, "strategy.lr"), "multitask": "multitask.lr"},
            float,
            "learning rate (paper 1: Stage II)",
        ),
    )
}

#: Runtime keys: they change how the run executes, never what it computes (no ``conf/`` key).
#: ``warm-clients``: split clients keep their state in a per-node worker process
#: (:mod:`flwr_semcom.runtime.relay`; ``true`` / ``false``; unset: the relay's default).
RUNTIME_KEYS: tuple[str, ...] = ("warm-clients",)

#: Every key of ``[tool.flwr.app.config]``.
RUN_CONFIG_KEYS: tuple[str, ...] = ("experiment", "overrides", *RUN_KEYS, *RUNTIME_KEYS)


def _valid(target: str) -> str:
    """The valid range of ``target`` as its validation rule words it."""
    from flwr_semcom import config

    config._load_rule_modules()
    rule = config.RULES.get(target)
    return rule.valid if rule is not None else "a number"


def _override_key(item: str) -> str:
    return item.split("=", 1)[0].lstrip("+~")


def _hydra_text(run_key: RunKey, target: str, value: Any) -> str:
    """``value`` (TOML-typed) as hydra override text; type errors name the run-config key."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if run_key.kind is int:
        ok = ok and isinstance(value, int)
    if not ok:
        raise ConfigError(
            f"{run_key.name}: invalid value {value!r}; expected {_valid(target)} "
            f'(sets {target}; unset: "")'
        )
    return repr(value)  # int or float; repr gives 'nan', 'inf', '1e-05' as hydra parses them


def runner_of(experiment: str) -> str:
    """The runner of ``experiment`` (``experiment.runner`` of its file in ``conf/``)."""
    return str(_compose(experiment, ()).experiment.runner)


def _target(run_key: RunKey, experiment: str, runner: str) -> str:
    target = run_key.target(runner)
    if target is None:
        users = ", ".join(sorted(run_key.targets))
        raise ConfigError(
            f"{run_key.name}: not used by experiment {experiment!r} (runner {runner}); "
            f"used by the runners {users}; set the key with `overrides` instead"
        )
    return target


def shortcut_overrides(
    values: Mapping[str, Any], experiment: str, base: Sequence[str] = ()
) -> tuple[list[str], dict[str, str]]:
    """Hydra overrides for the set shortcut keys of ``values``, and ``{conf key: shortcut}``.

    ``base`` are the other overrides of the run: a ``conf/`` key set there and by a shortcut
    is an error (which one should win is not obvious).
    """
    chosen = {k: v for k, v in values.items() if k in RUN_KEYS and v != UNSET}
    if not chosen:
        return [], {}
    runner = runner_of(experiment)
    taken = {_override_key(o) for o in base}
    items, names = [], {}
    for name, value in chosen.items():
        run_key = RUN_KEYS[name]
        target = _target(run_key, experiment, runner)
        if target in taken:
            raise ConfigError(
                f"{name}: {target} is also set in overrides; set it in one place only"
            )
        items.append(f"{target}={_hydra_text(run_key, target, value)}")
        names[target] = name
    return items, names


def rename_error(err: ConfigError, names: Mapping[str, str]) -> ConfigError:
    """``err`` about a ``conf/`` key set by a shortcut, reworded to name the shortcut key."""
    text = str(err)
    for target, name in names.items():
        if text.startswith(target + ":"):
            return ConfigError(f"{name}: {text[len(target) + 1 :].strip()} (sets {target})")
    return err


@lru_cache(maxsize=16)
def _compose(experiment: str, overrides: tuple[str, ...]) -> DictConfig:
    return compose_config(experiment, list(overrides))


def compose_run_config(run_config: Mapping[str, Any]) -> DictConfig:
    """Compose and validate the config a Flower run config selects (a fresh copy, cached)."""
    unknown = sorted(set(run_config) - set(RUN_CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"run config: unknown key(s) {', '.join(unknown)}; valid keys: "
            + ", ".join(RUN_CONFIG_KEYS)
        )
    experiment = run_config.get("experiment", "main")
    overrides = run_config.get("overrides", "")
    if not isinstance(experiment, str) or not isinstance(overrides, str):
        raise ConfigError("run config: experiment and overrides must be strings")
    for key in RUNTIME_KEYS:
        if run_config.get(key, UNSET) not in (UNSET, True, False):
            raise ConfigError(
                f'{key}: invalid value {run_config[key]!r}; expected true or false (unset: "")'
            )
    base = split_overrides(overrides)
    extra, names = shortcut_overrides(run_config, experiment, base)
    try:
        cfg = _compose(experiment, tuple(base + extra))
    except ConfigError as err:
        raise rename_error(err, names) from None
    return cfg.copy()


def canonical_run_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """``run_config`` with its set shortcut keys folded into ``overrides`` (and unset).

    Composes to the same config. The ServerApp hands this form to the runners, so that what
    they record for a resume (``experiment`` + ``overrides``) is complete. Without a set
    shortcut the ``overrides`` string is returned unchanged, byte for byte.
    """
    out = dict(run_config)
    experiment = str(run_config.get("experiment", "main"))
    overrides = run_config.get("overrides", "")
    base = split_overrides(overrides if isinstance(overrides, str) else "")
    extra, _ = shortcut_overrides(run_config, experiment, base)
    if extra:
        out["overrides"] = " ".join(filter(None, [str(overrides), shlex.join(extra)]))
        out.update(dict.fromkeys((k for k in RUN_KEYS if k in out), UNSET))
    return out


def _split_word(word: str) -> tuple[str, str]:
    key, sep, text = word.partition("=")
    if not sep or not key:
        raise ConfigError(f"{word!r}: expected key=value (a conf/ key or a run-config key)")
    return key, text


def cli_overrides(
    words: Sequence[str], experiment: str | None, base: Sequence[str] = ()
) -> tuple[str | None, list[str], dict[str, str]]:
    """``semcom-run`` words (``experiment=NAME``, ``snr-db=5``, ``channel.snr_db=5``).

    Returns the experiment (``experiment=NAME`` or the given one), the hydra overrides of the
    words and ``{conf key: shortcut}`` for :func:`rename_error`. A shortcut's value is read as
    TOML, exactly as ``flwr run --run-config`` reads it; ``base`` are other overrides of the
    run (``--overrides``), which a shortcut may not set again.
    """
    shortcuts: dict[str, Any] = {}
    plain: list[str] = []
    for word in words:
        key, text = _split_word(word)
        if key == "experiment":
            if experiment is not None and experiment != text:
                raise ConfigError(f"experiment: given twice ({experiment!r} and {text!r})")
            experiment = text
        elif key in RUN_KEYS:
            try:
                shortcuts[key] = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                shortcuts[key] = text
        else:
            plain.append(word)
    extra, names = shortcut_overrides(shortcuts, experiment or "main", [*base, *plain])
    return experiment, plain + extra, names


def sweep_overrides(words: Sequence[str], experiment: str) -> tuple[list[str], dict[str, str]]:
    """``semcom-sweep`` words: shortcut keys renamed to their ``conf/`` key, values kept as
    written (so ``snr-db=0,10,20`` sweeps ``channel.snr_db``); also ``{conf key: shortcut}``."""
    out, names = [], {}
    for word in words:
        key = _split_word(word)[0]
        if key in RUN_KEYS:
            target = _target(RUN_KEYS[key], experiment, runner_of(experiment))
            names[target] = key
            word = target + word[len(key) :]
        out.append(word)
    return out, names
