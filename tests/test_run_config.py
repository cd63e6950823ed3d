"""Flower run config: kebab-case shortcut keys, their mapping onto conf/, and the CLI words."""

from __future__ import annotations

import math
import shlex
import tomllib
from pathlib import Path

import pytest

from flwr_semcom.config import ConfigError, compose_config, config_from_run_config
from flwr_semcom.run_config import (
    RUN_CONFIG_KEYS,
    RUN_KEYS,
    canonical_run_config,
    cli_overrides,
    sweep_overrides,
)

ROOT = Path(__file__).resolve().parents[1]
SPLIT = "split_supervised"


def _declared() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return dict(tomllib.load(fh)["tool"]["flwr"]["app"]["config"])


def test_pyproject_declares_every_key_and_shortcuts_default_to_unset() -> None:
    declared = _declared()
    assert tuple(declared) == RUN_CONFIG_KEYS  # Flower rejects undeclared --run-config keys
    assert declared["experiment"] == "main"
    assert all(declared[k] == "" for k in RUN_KEYS)  # "" = unset: conf/ holds the defaults
    assert {"snr-db", "rounds", "seed", "steps-per-message"} <= set(RUN_KEYS)


def test_declared_run_config_composes_exactly_the_conf_defaults() -> None:
    for experiment in ("main", SPLIT, "multitask", "slf_table1", "node_check"):
        declared = {**_declared(), "experiment": experiment}
        assert config_from_run_config(declared) == compose_config(experiment)


def test_every_target_is_a_key_of_an_experiment_with_that_runner() -> None:
    """The mapping names real runners and keys that their experiments have (no silent no-op)."""
    from omegaconf import OmegaConf

    from simulations.server_app import runner_names

    experiments = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    by_runner: dict[str, list[str]] = {}
    for name in experiments:
        by_runner.setdefault(str(compose_config(name).experiment.runner), []).append(name)
    assert set(by_runner) <= set(runner_names())
    for key in RUN_KEYS.values():
        for runner, target in key.targets.items():
            names = experiments if runner == "*" else by_runner[runner]
            for name in names:
                value = OmegaConf.select(compose_config(name), target)
                assert value is not None, (key.name, name, target)


def test_each_shortcut_sets_its_conf_key() -> None:
    values = {
        "snr-db": 5,
        "rounds": 2,
        "seed": 7,
        "steps-per-message": 3,
        "label-fraction": 0.5,
        "batch-size": 16,
        "lr": 0.01,
    }
    cfg = config_from_run_config({"experiment": SPLIT, **values})
    assert (cfg.channel.snr_db, cfg.strategy.rounds, cfg.seed) == (5, 2, 7)
    assert (cfg.strategy.steps_per_message, cfg.data.label_fraction) == (3, 0.5)
    assert (cfg.strategy.batch_size, cfg.strategy.lr) == (16, 0.01)
    # everything else is conf/'s
    base = compose_config(SPLIT)
    assert cfg.model == base.model and cfg.strategy.momentum == base.strategy.momentum
    # the same values through hydra overrides give the same tree
    same = compose_config(
        SPLIT,
        "channel.snr_db=5 strategy.rounds=2 seed=7 strategy.steps_per_message=3 "
        "data.label_fraction=0.5 strategy.batch_size=16 strategy.lr=0.01",
    )
    assert cfg == same


def test_shortcut_targets_follow_the_runner() -> None:
    cfg = config_from_run_config({"experiment": "multitask", "rounds": 2, "lr": 0.001})
    assert cfg.multitask.rounds == 2 and cfg.multitask.lr == 0.001
    assert cfg.strategy.rounds == compose_config("multitask").strategy.rounds  # untouched


@pytest.mark.parametrize(
    ("run_config", "start", "words"),
    [
        ({"snr-db": math.nan}, "snr-db: invalid value nan;", ("finite", "channel.snr_db")),
        ({"rounds": 2.5}, "rounds: invalid value 2.5;", ("an integer in [1,", "strategy.rounds")),
        ({"rounds": 0}, "rounds: invalid value 0;", ("an integer in [1,",)),
        ({"seed": -1}, "seed: invalid value -1;", ("[0, ",)),
        ({"lr": "fast"}, "lr: invalid value 'fast';", ("(0, ", 'unset: ""')),
        ({"label-fraction": 0}, "label-fraction: invalid value 0;", ("(0, 1]",)),
        ({"steps-per-message": True}, "steps-per-message: invalid value True;", ("integer",)),
        (
            {"snr-db": 5, "overrides": "channel.snr_db=3"},
            "snr-db: channel.snr_db is also set in overrides",
            (),
        ),
    ],
)
def test_bad_shortcut_fails_in_one_line_naming_the_key(
    run_config: dict[str, object], start: str, words: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_run_config({"experiment": SPLIT, **run_config})
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(start), msg
    assert all(w in msg for w in words), msg


def test_shortcut_the_experiment_does_not_use_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^snr-db: not used by experiment 'slf_table1'"):
        config_from_run_config({"experiment": "slf_table1", "snr-db": 5})
    with pytest.raises(ConfigError, match=r"^steps-per-message: not used by .*'multitask'"):
        config_from_run_config({"experiment": "multitask", "steps-per-message": 2})


def test_canonical_run_config_folds_shortcuts_into_overrides() -> None:
    plain = {**_declared(), "overrides": "'paths.output_dir=/tmp/a b'  seed=1"}
    assert canonical_run_config(plain) == plain  # nothing set: overrides kept byte for byte
    rc = {**_declared(), "experiment": SPLIT, "overrides": "seed=1", "snr-db": 5, "lr": 0.02}
    folded = canonical_run_config(rc)
    assert folded["overrides"] == "seed=1 channel.snr_db=5 strategy.lr=0.02"
    assert all(folded[k] == "" for k in RUN_KEYS)
    assert config_from_run_config(folded) == config_from_run_config(rc)


def test_cli_words_take_shortcuts_experiment_and_conf_keys() -> None:
    experiment, overrides, names = cli_overrides(
        ["experiment=split_supervised", "snr-db=5", "channel.csi=none", "rounds=2"], None
    )
    assert experiment == SPLIT
    assert overrides == ["channel.csi=none", "channel.snr_db=5", "strategy.rounds=2"]
    assert names == {"channel.snr_db": "snr-db", "strategy.rounds": "rounds"}
    with pytest.raises(ConfigError, match="^snr-db: channel.snr_db is also set"):
        cli_overrides(["snr-db=5"], SPLIT, base=["channel.snr_db=1"])
    with pytest.raises(ConfigError, match="^experiment: given twice"):
        cli_overrides(["experiment=main"], SPLIT)
    with pytest.raises(ConfigError, match="expected key=value"):
        cli_overrides(["snr-db"], SPLIT)


def test_sweep_words_rename_shortcuts_and_keep_the_sweep() -> None:
    words, names = sweep_overrides(["snr-db=0,10", "seed=3", "channel.csi=none"], SPLIT)
    assert words == ["channel.snr_db=0,10", "seed=3", "channel.csi=none"]
    assert names == {"channel.snr_db": "snr-db", "seed": "seed"}


def test_launcher_overrides_round_trip_through_the_run_config_string() -> None:
    """semcom-run joins overrides with shlex; the ServerApp splits them back."""
    from flwr_semcom.config import split_overrides

    items = ["paths.output_dir=/tmp/a b", "channel.snr_db=5"]
    assert split_overrides(" ".join(shlex.quote(o) for o in items)) == items


def test_runner_names_are_the_experiment_runners_not_their_helper_modules() -> None:
    """``experiment.runner`` accepts the runner modules only; ``_``-prefixed helper modules of
    ``simulations/experiments/`` (e.g. paper 1's ``_paper1_stages``) are refused by name."""
    from simulations.server_app import load_runner, runner_names

    names = runner_names()
    assert {"multimodal", "split_supervised", "slf_table1", "multitask", "node_check"} <= set(names)
    assert not [n for n in names if n.startswith("_")]
    with pytest.raises(ConfigError, match=r"experiment.runner: unknown '_paper1_stages'"):
        load_runner("_paper1_stages")
