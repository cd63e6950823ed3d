"""The one config source: composition, overrides and one-line validation errors."""

from __future__ import annotations

import pytest

from flwr_semcom.config import (
    ConfigError,
    compose_config,
    config_from_run_config,
    resolve_device,
    split_overrides,
)


def test_default_composes_and_overrides_apply() -> None:
    cfg = compose_config("split_supervised")
    assert cfg.experiment.name == "split_supervised"
    assert cfg.channel.name == "awgn"
    cfg2 = compose_config("split_supervised", "channel.snr_db=3.5 seed=7")
    assert cfg2.channel.snr_db == 3.5 and cfg2.seed == 7
    assert cfg.channel.snr_db != 3.5  # composing again starts from conf/, not from cfg2


def test_main_job_is_the_four_method_comparison_with_few_labels() -> None:
    """The README's main job (and `flwr run .`'s default run config) is paper 1's comparison."""
    main, base = compose_config("main"), compose_config("multimodal")
    assert compose_config().experiment.name == "main"  # the default experiment
    assert main.experiment.runner == "multimodal"
    assert list(main.experiment.methods) == ["decur", "simclr", "barlow_twins", "supervised"]
    assert main.data.label_fraction == 0.1 and main.strategy.lr_schedule == "cosine"
    # everything main does not set comes from the multimodal experiment
    assert main.model == base.model and main.finetune == base.finetune
    assert main.pretrain.augment == base.pretrain.augment


def test_group_switch_and_quoted_overrides() -> None:
    cfg = compose_config("split_supervised", "channel=rayleigh 'paths.output_dir=/tmp/a b'")
    assert cfg.channel.name == "rayleigh" and cfg.channel.csi == "perfect"
    assert cfg.paths.output_dir == "/tmp/a b"
    assert split_overrides("a=1 'b=x y'") == ["a=1", "b=x y"]


@pytest.mark.parametrize(
    ("overrides", "key", "valid"),
    [
        ("channel.snr_db=nan", "channel.snr_db", "finite"),
        ("channel.snr_db=-inf", "channel.snr_db", "finite"),
        ("seed=-1", "seed", "[0, "),
        ("device=gpu", "device", "'cuda:N'"),
        ("num_threads=0", "num_threads", "[1, 256]"),
        ("channel=dmc channel.crossover=1.5", "channel.crossover", "[0, 1]"),
        ("channel=rayleigh channel.csi=partial", "channel.csi", "'perfect' or 'none'"),
        ("nosuchkey=1", "nosuchkey", "unknown config key"),
        ("channel.typo=3", "channel.typo", "unknown config key"),
        ("channel=laser", "channel", "awgn, dmc, ideal, rayleigh"),
    ],
)
def test_bad_values_fail_in_one_line_naming_key_and_range(
    overrides: str, key: str, valid: str
) -> None:
    with pytest.raises(ConfigError) as info:
        compose_config("split_supervised", overrides)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(key + ":"), msg
    assert valid in msg, msg


def test_unknown_experiment_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"experiment: unknown 'nope'; valid names: .*main"):
        compose_config("nope")


def test_run_config_selects_and_overrides_and_returns_a_copy() -> None:
    cfg = config_from_run_config(
        {"experiment": "split_supervised", "overrides": "channel.snr_db=1"}
    )
    assert cfg.channel.snr_db == 1
    cfg.channel.snr_db = 99  # a copy: the cache is not modified
    again = config_from_run_config(
        {"experiment": "split_supervised", "overrides": "channel.snr_db=1"}
    )
    assert again.channel.snr_db == 1
    with pytest.raises(ConfigError, match="run config: unknown key.*valid keys: experiment, "):
        config_from_run_config({"experiment": "split_supervised", "learning_rate": 0.1})


def test_device_resolution_cpu_fallback() -> None:
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device: 'cuda' requested but torch sees no CUDA"):
            resolve_device("cuda")
