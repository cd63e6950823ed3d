"""Typed settings of the multi-task experiment (paper 3, arXiv 2501.02006).

Everything below :mod:`.settings` (the hydra edge, which builds these objects from the composed
``conf/experiment/multitask.yaml``) takes these frozen dataclasses, never a ``DictConfig``:

- :class:`LinkSpec`: the link's architecture (tasks, encoder widths, GAI sizes, decoders);
- :class:`DataSpec`: the data set, its size and the seed of its split and shards;
- :class:`LocalTraining`: one device's local update and evaluation (epochs, batch, Adam lr,
  loss weights ``λ_t`` of eq. 16, training SNR range, evaluation SNRs);
- :class:`MultitaskSettings`: the three above plus the federated plan (methods, bandwidth
  ratios, devices, rounds, timeout, seed, threads).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "SOURCE_DIMS",
    "DataSpec",
    "LinkSpec",
    "LocalTraining",
    "MultitaskSettings",
    "ratio_label",
]

#: ``n = C·H·W`` of the transmitted RGB image (3 × 32 × 32).
SOURCE_DIMS = 3 * 32 * 32


def ratio_label(ratio: float) -> str:
    """``0.0833…`` → ``"1/12"`` (the nearest fraction with a denominator ≤ 1000)."""
    frac = Fraction(float(ratio)).limit_denominator(1000)
    return f"{frac.numerator}/{frac.denominator}"


@dataclass(frozen=True)
class LinkSpec:
    """Architecture of a multi-task link (:class:`~flwr_semcom.multitask.system.MultiTaskSemCom`).

    ``widths`` / ``blocks_per_stage``: the block encoder; ``node_channels`` (``C_out``),
    ``heads``, ``iterations`` (``M``) and ``relation_hidden`` (``C_rm``): the GAI module;
    ``decoder_hidden``: the task decoders' channels.
    """

    tasks: tuple[str, ...]
    widths: tuple[int, ...] = (8, 16, 32, 64)
    blocks_per_stage: int = 2
    node_channels: int = 32
    heads: int = 4
    iterations: int = 1
    relation_hidden: int = 64
    decoder_hidden: int = 32


@dataclass(frozen=True)
class DataSpec:
    """Which data, how many items, the test and validation fractions and the seed of the
    split and shards (``val_fraction``: share of the training part held out for validation;
    0 = none, the training part is then that of earlier versions).

    ``data_root`` is the resolved folder of the CIFAR-10 JPEGs (``""`` for the embedded
    ``synthetic_rgbd`` scenes).
    """

    dataset: str = "synthetic_rgbd"
    num_samples: int = 1500
    test_fraction: float = 0.2
    cifar_per_class: int = 200
    data_root: str = ""
    seed: int = 0
    val_fraction: float = 0.0


@dataclass(frozen=True)
class LocalTraining:
    """One device's local update (Adam, ``L = Σ_t λ_t L_t``) and evaluation."""

    epochs: int
    batch_size: int
    lr: float
    loss_weights: tuple[float, ...]
    train_snr_db: tuple[float, float]
    eval_snr_db: tuple[float, ...]
    eval_batch_size: int


@dataclass(frozen=True)
class MultitaskSettings:
    """The whole experiment, typed: link, data, local training and the federated plan."""

    link: LinkSpec
    data: DataSpec
    local: LocalTraining
    methods: tuple[str, ...]
    bandwidth_ratios: tuple[float, ...]
    num_devices: int
    rounds: int
    timeout: float
    seed: int
    num_threads: int = 1
