"""The pre-trained models of paper 2: transceivers T1..T3 and the frozen task classifiers.

Choi et al., arXiv 2310.09394, Sec. IV: each transceiver is pre-trained alone in its own
environment (data source, DMC crossover ``p``), with Adam at the original learning rate:
T1 on MNIST at ``p1``, T2 on MNIST at ``p2`` (channel dissimilarity), T3 on the eq. 8
MNIST / CIFAR-10 mixture at ``ε`` (source dissimilarity). The classifiers (MNIST; MNIST +
CIFAR-10) are trained once on clean images and stay frozen. All of them are cached by a hash
of their spec (:mod:`flwr_semcom.slf.cache`). The settings are a typed :class:`Pretraining`,
built from ``conf/`` by :func:`flwr_semcom.slf.settings.pretraining` (the environments are
``strategy.transceivers`` in ``conf/strategy/slf.yaml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flwr_semcom.models.classifier import ConvClassifier
from flwr_semcom.models.vqvae import VQVAETransceiver
from flwr_semcom.slf.cache import load_or_train
from flwr_semcom.slf.data import DataKey, classifier_data, node_data, num_classes
from flwr_semcom.slf.training import train_classifier, train_transceiver

__all__ = [
    "CACHE_VERSION",
    "Pretraining",
    "pretrained_classifier",
    "pretrained_transceiver",
]

#: Bumped when the training code changes in a way that changes the weights.
CACHE_VERSION = 1


#: Run seed ``s`` trains each transceiver with its environment's seed + ``SEED_STRIDE * s``.
SEED_STRIDE = 1000


@dataclass(frozen=True)
class Pretraining:
    """Everything that determines the pre-trained models (typed; part of each cache key).

    Attributes
    ----------
    model
        The transceiver's settings as in ``conf/model/vqvae.yaml`` without ``classifier``
        (``name``, ``in_channels``, ``enc_channels``, ``code_dim``, ``codebook_size``,
        ``dec_channels``).
    classifier
        ``{"channels": [...], "hidden": ...}`` of the task classifier.
    data
        The data settings.
    envs
        Transceiver name → ``{"source", "epsilon", "crossover", "seed"}``.
    steps, lr, batch_size, beta
        Transceiver pre-training (Adam) and the eq. 7 commitment weight.
    classifier_steps, classifier_lr, classifier_shift
        Classifier training (Adam, random shifts of up to ``classifier_shift`` pixels).
    seed
        The run's seed (``seed``): each transceiver trains with its environment's seed +
        ``SEED_STRIDE`` x ``seed``, so seed 0 trains T1, T2, T3 with their configured seeds
        and every other seed retrains them with seeds no other run seed uses.
    classifier_seed
        Seed of the task classifiers (``strategy.classifier.seed``): the classifiers are the
        measuring instrument, the same for every run seed.
    cache_dir
        Absolute checkpoint folder.
    device
        Torch device of the training.
    """

    model: Mapping[str, Any]
    classifier: Mapping[str, Any]
    data: DataKey
    envs: Mapping[str, Mapping[str, Any]]
    steps: int
    lr: float
    batch_size: int
    beta: float
    classifier_steps: int
    classifier_lr: float
    classifier_shift: int
    seed: int
    cache_dir: Path
    classifier_seed: int = 0
    device: str = "cpu"

    def new_transceiver(self) -> VQVAETransceiver:
        """A freshly initialised transceiver of these sizes (on CPU)."""
        m = self.model
        return VQVAETransceiver(
            in_channels=int(m["in_channels"]),
            enc_channels=tuple(int(c) for c in m["enc_channels"]),
            code_dim=int(m["code_dim"]),
            codebook_size=int(m["codebook_size"]),
            dec_channels=tuple(int(c) for c in m["dec_channels"]),
        )

    def new_classifier(self, source: str) -> ConvClassifier:
        """A freshly initialised classifier for the label space of ``source`` (on CPU)."""
        return ConvClassifier(
            num_classes=num_classes(source),
            in_channels=int(self.model["in_channels"]),
            channels=tuple(int(x) for x in self.classifier["channels"]),
            hidden=int(self.classifier["hidden"]),
        )

    def env(self, name: str) -> dict[str, Any]:
        """The pre-training environment of transceiver ``name`` (``ValueError`` if unknown)."""
        if name not in self.envs:
            raise ValueError(
                f"unknown transceiver {name!r}; valid names (strategy.transceivers): "
                + ", ".join(sorted(self.envs))
            )
        env = dict(self.envs[name])
        env["seed"] = int(env["seed"]) + SEED_STRIDE * self.seed
        return env

    def transceiver_spec(self, name: str) -> dict[str, Any]:
        """Everything that determines the weights of transceiver ``name`` (the cache key)."""
        return {
            "name": name,
            "version": CACHE_VERSION,
            "model": dict(self.model),
            "data": self.data.spec(),
            "env": self.env(name),
            "train": {
                "steps": self.steps,
                "lr": self.lr,
                "batch_size": self.batch_size,
                "beta": self.beta,
            },
        }

    def classifier_spec(self, source: str) -> dict[str, Any]:
        """Everything that determines the weights of the ``source`` classifier (the cache key)."""
        return {
            "name": f"classifier-{source}",
            "version": CACHE_VERSION,
            "model": dict(self.classifier),
            "in_channels": int(self.model["in_channels"]),
            "data": self.data.spec(),
            "source": source,
            "seed": self.classifier_seed,
            "train": {
                "steps": self.classifier_steps,
                "lr": self.classifier_lr,
                "shift": self.classifier_shift,
                "batch_size": self.batch_size,
            },
        }


def _seeded(seed: int) -> torch.Generator:
    torch.manual_seed(seed)  # parameter initialisation of the freshly built model
    return torch.Generator().manual_seed(seed)


def pretrained_transceiver(pre: Pretraining, name: str) -> tuple[VQVAETransceiver, bool]:
    """Transceiver ``name`` pre-trained in its environment (cached); ``(model, from_cache)``."""
    spec = pre.transceiver_spec(name)
    env, tr = spec["env"], spec["train"]

    def build() -> VQVAETransceiver:
        with torch.random.fork_rng(devices=[]):
            _seeded(int(env["seed"]))
            return pre.new_transceiver()

    def train(model: VQVAETransceiver) -> dict[str, Any]:
        data = node_data(pre.data, env["source"], float(env["epsilon"]), "train")
        images = data.images.to(pre.device)
        stats = train_transceiver(
            model.to(pre.device),
            images,
            steps=tr["steps"],
            lr=tr["lr"],
            batch_size=tr["batch_size"],
            crossover=float(env["crossover"]),
            beta=tr["beta"],
            seed=int(env["seed"]),
            init_codebook=True,
        )
        return {"wall_s": stats.wall_s, "last_loss": stats.last_loss, "images": len(images)}

    return load_or_train(pre.cache_dir, "transceiver", spec, build, train)


def pretrained_classifier(pre: Pretraining, source: str) -> tuple[ConvClassifier, bool]:
    """The frozen classifier of ``source`` (``mnist`` or ``mixed``), cached."""
    spec = pre.classifier_spec(source)
    tr = spec["train"]

    def build() -> ConvClassifier:
        with torch.random.fork_rng(devices=[]):
            _seeded(spec["seed"])
            return pre.new_classifier(source)

    def train(model: ConvClassifier) -> dict[str, Any]:
        ds = classifier_data(pre.data, source)
        stats = train_classifier(
            model.to(pre.device),
            ds.images.to(pre.device),
            ds.labels.to(pre.device),
            steps=tr["steps"],
            lr=tr["lr"],
            batch_size=tr["batch_size"],
            shift=tr["shift"],
            seed=spec["seed"],
        )
        return {"wall_s": stats.wall_s, "last_loss": stats.last_loss, "images": len(ds)}

    model, cached = load_or_train(pre.cache_dir, "classifier", spec, build, train)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, cached
