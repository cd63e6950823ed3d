"""Settings of paper 1's two stages: methods, placements, the ``pretrain`` config group.

Paper 1 (Zhao et al., arXiv 2503.13940): Stage I (Sec. III-A) is label-free pretraining of the
device encoders f^m with one of four *methods*; Stage II (Sec. III-B) is supervised split
fine-tuning. Stage I can run in three *placements* (ours; the paper counts no Stage I
communication, Algorithm 1):

========== ============================================================== =================
placement  what happens                                                   Stage I traffic
========== ============================================================== =================
local      each device trains its encoder with the intra-modal term only  0 payload bits
split      devices send projector outputs p^m of view a up, the server    features up,
           computes the cross-modal term (eq. 11-15) and returns          gradients down
           ∂L/∂p^m (split runtime); intra-modal terms stay on the device
server     the server pretrains on unlabelled paired data it holds and    parameters down
           downloads each device's encoder
========== ============================================================== =================

Valid combinations (``placement: auto`` picks the first):

- ``decur``: split, server. ``local`` would drop the cross-modal term and *be* Barlow Twins,
  so it is refused.
- ``barlow_twins``, ``simclr`` (single-modality methods, eq. 19 / eq. 18): local, server.
  ``split`` has nothing to send (no cross-modal term), so it is refused.
- ``none`` (supervised from scratch): no Stage I; its placement is always ``none`` (so one
  ``pretrain.placement`` can be set for a whole multi-method run).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from flwr_semcom.paper1.augment import AugmentConfig
from flwr_semcom.rules import (
    ConfigError,
    Rule,
    add_check,
    add_rules,
    float_range,
    if_present,
    int_list,
    int_range,
    one_of,
)

__all__ = [
    "METHODS",
    "METHOD_LABELS",
    "PLACEMENTS",
    "PRETRAIN_RULES",
    "VALID_PLACEMENTS",
    "SSLSettings",
    "check_pretrain_config",
    "method_key",
    "resolve_placement",
    "ssl_settings",
]

#: Stage I methods (``pretrain.method``); ``none`` = supervised from scratch.
METHODS = ("decur", "barlow_twins", "simclr", "none")
#: Placements (``pretrain.placement``).
PLACEMENTS = ("auto", "local", "split", "server", "none")
#: Valid placements per method, the default first.
VALID_PLACEMENTS: dict[str, tuple[str, ...]] = {
    "decur": ("split", "server"),
    "barlow_twins": ("local", "server"),
    "simclr": ("local", "server"),
    "none": ("none",),
}
#: The name a method has in results (summary keys, plot legends).
METHOD_LABELS = {
    "decur": "decur",
    "barlow_twins": "barlow_twins",
    "simclr": "simclr",
    "none": "supervised",
}
_WHY = {
    ("decur", "local"): "local keeps only the intra-modal terms, which is Barlow Twins; DeCUR "
    "needs the cross-modal term (eq. 11-15)",
    ("barlow_twins", "split"): "Barlow Twins has no cross-modal term, so nothing would cross "
    "the link",
    ("simclr", "split"): "SimCLR has no cross-modal term, so nothing would cross the link",
}


def method_key(name: str) -> str:
    """Map a method name of ``experiment.methods`` (``supervised`` = ``none``) to METHODS."""
    name = str(name)
    if name == "supervised":
        return "none"
    if name not in METHODS:
        raise ConfigError(
            f"experiment.methods: unknown method {name!r}; valid: "
            + ", ".join((*METHODS[:-1], "supervised"))
        )
    return name


def resolve_placement(method: str, placement: str) -> str:
    """The effective placement of ``method``; ``ConfigError`` for an impossible pair."""
    method = method_key(method)
    if placement not in PLACEMENTS:
        raise ConfigError(
            f"pretrain.placement: invalid value {placement!r}; expected one of "
            + ", ".join(PLACEMENTS)
        )
    valid = VALID_PLACEMENTS[method]
    if method == "none":
        return "none"  # supervised from scratch: no Stage I wherever it would have run
    if placement == "auto":
        return valid[0]
    if placement not in valid:
        why = _WHY.get((method, placement), "")
        raise ConfigError(
            f"pretrain.placement: {placement!r} is not valid for method {method!r}"
            + (f" ({why})" if why else "")
            + f"; valid: auto, {', '.join(valid)}"
        )
    return placement


PRETRAIN_RULES: dict[str, Rule] = {
    "pretrain.method": if_present(one_of(*METHODS)),
    "pretrain.placement": if_present(one_of(*PLACEMENTS)),
    "pretrain.rounds": if_present(int_range(0, 100_000)),
    "pretrain.batch_size": if_present(int_range(2, 1_000_000)),
    "pretrain.steps_per_message": if_present(int_range(1, 100_000)),
    "pretrain.lr": if_present(float_range(0.0, 100.0, lo_open=True)),
    "pretrain.momentum": if_present(
        Rule(
            lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
            "a number in [0, 1)",
        )
    ),
    "pretrain.weight_decay": if_present(float_range(0.0, 1.0)),
    "pretrain.projector": int_list(1),
    "pretrain.common_fraction": if_present(float_range(0.0, 1.0)),
    "pretrain.lambda_offdiag": if_present(float_range(0.0, None)),
    "pretrain.reduction": if_present(one_of("sum", "mean")),
    "pretrain.temperature": if_present(float_range(0.0, None, lo_open=True)),
    "model.widths": Rule(
        lambda v: v is None or int_list(1).check(v), "null or a list of ints >= 1", False
    ),
    "experiment.methods": Rule(
        lambda v: (
            isinstance(v, list)
            and len(v) >= 1
            and all(x in (*METHODS, "supervised") for x in v)
            and len({"none" if x == "supervised" else x for x in v}) == len(v)
        ),
        "a non-empty list of distinct methods from decur, barlow_twins, simclr, supervised",
        required=False,
    ),
    "experiment.target_accuracy": Rule(
        lambda v: (
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1)
        ),
        "null (= the supervised baseline's final accuracy) or a number in (0, 1]",
        required=False,
    ),
    "finetune.precise_bn_samples": if_present(int_range(0, 10_000_000)),
    "finetune.crop_scale_min": if_present(float_range(0.0, 1.0, lo_open=True)),
    "experiment.fail_on_divergence": Rule(
        lambda v: isinstance(v, bool), "true or false", required=False
    ),
}

add_rules(PRETRAIN_RULES)

_REQUIRED = (
    "method",
    "placement",
    "rounds",
    "batch_size",
    "steps_per_message",
    "lr",
    "momentum",
    "weight_decay",
    "projector",
    "common_fraction",
    "lambda_offdiag",
    "reduction",
    "temperature",
)


def check_pretrain_config(cfg: DictConfig) -> None:
    """Require the ``pretrain`` group and its keys, and a valid method/placement pair."""
    pre: Any = cfg.get("pretrain")
    if pre is None:
        raise ConfigError(
            "pretrain: missing; the paper-1 experiments define it (conf/experiment/multimodal.yaml)"
        )
    for key in _REQUIRED:
        if key not in pre:
            raise ConfigError(f"pretrain.{key}: missing; see conf/experiment/multimodal.yaml")
    resolve_placement(str(pre.method), str(pre.placement))
    augment = pre.get("augment")
    AugmentConfig.from_mapping(None if augment is None else dict(augment))
    proj = list(pre.projector)
    if str(pre.method) == "decur":
        common = int(round(float(pre.common_fraction) * int(proj[-1])))
        if not 0 < common <= int(proj[-1]):
            raise ConfigError(
                f"pretrain.common_fraction: {pre.common_fraction} gives K_sha={common} of "
                f"D={proj[-1]}; expected 0 < K_sha <= D"
            )


def _check_pretrain_group(cfg: DictConfig) -> None:
    """Run :func:`check_pretrain_config` at composition time when ``pretrain`` is present."""
    if cfg.get("pretrain") is not None:
        check_pretrain_config(cfg)


add_check(_check_pretrain_group)


def encoder_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Extra encoder arguments from ``model.widths`` (``small_cnn`` only)."""
    widths = cfg.model.get("widths")
    if widths is None:
        return {}
    if str(cfg.model.encoder) != "small_cnn":
        raise ConfigError(
            f"model.widths: only the small_cnn encoder takes widths, got encoder "
            f"{cfg.model.encoder!r}; set model.widths=null"
        )
    return {"widths": tuple(int(w) for w in widths)}


def common_dim(pre: Mapping[str, Any] | DictConfig) -> int:
    """K_sha = round(common_fraction × D) (DeCUR: 75 % for RGB-D)."""
    d = int(list(pre["projector"])[-1])
    return int(round(float(pre["common_fraction"]) * d))


@dataclass(frozen=True)
class SSLSettings:
    """Stage I settings, typed: the SSL transmitter and the ``pretrain`` group.

    Built once from the composed config by :func:`ssl_settings` (the only place that reads
    the ``pretrain`` keys); the models, losses and passes of Stage I take this object.

    Attributes
    ----------
    seed
        Run seed (initial weights: ``derive_seed(seed, "p1-init", modality)``; batches).
    encoder, image_size, num_symbols, widths
        The device encoder (``model.*``; ``widths`` for ``small_cnn`` only, else ``None``).
    projector
        Projector widths; the last is D of the correlation matrices.
    common_fraction, lambda_offdiag, reduction, temperature
        Loss settings: K_sha / D, λ of eq. 10/13/14/19, DeCUR's reduction, SimCLR's τ.
    lr, momentum, weight_decay, batch_size
        SGD and the batch size of a Stage I pass.
    augment
        The two-view augmentation (``pretrain.augment``).
    """

    seed: int
    encoder: str
    image_size: int
    num_symbols: int
    widths: tuple[int, ...] | None
    projector: tuple[int, ...]
    common_fraction: float
    lambda_offdiag: float
    reduction: str
    temperature: float
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    augment: AugmentConfig

    @property
    def common_dim(self) -> int:
        """K_sha = round(common_fraction × D)."""
        return common_dim({"projector": self.projector, "common_fraction": self.common_fraction})

    @property
    def encoder_kwargs(self) -> dict[str, Any]:
        """Extra encoder arguments (``widths``)."""
        return {} if self.widths is None else {"widths": self.widths}


def ssl_settings(cfg: DictConfig) -> SSLSettings:
    """The typed Stage I settings of a composed config (``pretrain`` group required)."""
    pre = cfg.pretrain
    widths = encoder_kwargs(cfg).get("widths")
    augment = pre.get("augment")
    return SSLSettings(
        seed=int(cfg.seed),
        encoder=str(cfg.model.encoder),
        image_size=int(cfg.data.image_size),
        num_symbols=int(cfg.model.num_symbols),
        widths=None if widths is None else tuple(widths),
        projector=tuple(int(w) for w in pre.projector),
        common_fraction=float(pre.common_fraction),
        lambda_offdiag=float(pre.lambda_offdiag),
        reduction=str(pre.reduction),
        temperature=float(pre.temperature),
        lr=float(pre.lr),
        momentum=float(pre.momentum),
        weight_decay=float(pre.weight_decay),
        batch_size=int(pre.batch_size),
        augment=AugmentConfig.from_mapping(augment),
    )
