"""The pre-trained models of paper 2: transceivers T1..T3 and the frozen task classifiers.

Choi et al., arXiv 2310.09394, Sec. IV: each transceiver is pre-trained alone in its own
environment (data source, DMC crossover ``p``), with Adam at the original learning rate:
T1 on MNIST at ``p1``, T2 on MNIST at ``p2`` (channel dissimilarity), T3 on the eq. 8
MNIST / CIFAR-10 mixture at ``ε`` (source dissimilarity). The classifiers (MNIST; MNIST +
CIFAR-10) are trained once on clean images and stay frozen. All of them are cached by a hash
of their config (:mod:`flwr_semcom.slf.cache`); the environments are
``strategy.transceivers`` in ``conf/strategy/slf.yaml``.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from flwr_semcom.config import resolve_device
from flwr_semcom.models.classifier import ConvClassifier
from flwr_semcom.models.vqvae import VQVAETransceiver
from flwr_semcom.slf.cache import load_or_train
from flwr_semcom.slf.data import classifier_data, data_key, node_data, num_classes
from flwr_semcom.slf.settings import cache_dir, plain
from flwr_semcom.slf.training import train_classifier, train_transceiver

__all__ = [
    "build_classifier",
    "build_transceiver",
    "classifier_spec",
    "pretrained_classifier",
    "pretrained_transceiver",
    "transceiver_spec",
]

#: Bumped when the training code changes in a way that changes the weights.
CACHE_VERSION = 1


def build_transceiver(cfg: DictConfig) -> VQVAETransceiver:
    """A freshly initialised transceiver with the sizes of ``cfg.model``."""
    m = cfg.model
    return VQVAETransceiver(
        in_channels=int(m.in_channels),
        enc_channels=tuple(int(c) for c in m.enc_channels),
        code_dim=int(m.code_dim),
        codebook_size=int(m.codebook_size),
        dec_channels=tuple(int(c) for c in m.dec_channels),
    )


def build_classifier(cfg: DictConfig, source: str) -> ConvClassifier:
    """A freshly initialised classifier for the label space of ``source``."""
    c = cfg.model.classifier
    return ConvClassifier(
        num_classes=num_classes(source),
        in_channels=int(cfg.model.in_channels),
        channels=tuple(int(x) for x in c.channels),
        hidden=int(c.hidden),
    )


def _transceiver_env(cfg: DictConfig, name: str) -> dict[str, Any]:
    envs = cfg.strategy.transceivers
    if name not in envs:
        raise ValueError(
            f"unknown transceiver {name!r}; valid names (strategy.transceivers): "
            + ", ".join(sorted(envs))
        )
    env: dict[str, Any] = plain(envs[name])
    return env


def transceiver_spec(cfg: DictConfig, name: str) -> dict[str, Any]:
    """Everything that determines the weights of transceiver ``name`` (the cache key)."""
    s = cfg.strategy
    return {
        "name": name,
        "version": CACHE_VERSION,
        "model": {k: plain(v) for k, v in cfg.model.items() if k != "classifier"},
        "data": data_key(cfg)._asdict(),
        "env": _transceiver_env(cfg, name),
        "train": {
            "steps": int(s.pretrain.steps),
            "lr": float(s.pretrain.lr),
            "batch_size": int(s.batch_size),
            "beta": float(s.beta),
        },
    }


def classifier_spec(cfg: DictConfig, source: str) -> dict[str, Any]:
    """Everything that determines the weights of the ``source`` classifier (the cache key)."""
    c = cfg.strategy.classifier
    return {
        "name": f"classifier-{source}",
        "version": CACHE_VERSION,
        "model": plain(cfg.model.classifier),
        "in_channels": int(cfg.model.in_channels),
        "data": data_key(cfg)._asdict(),
        "source": source,
        "seed": int(cfg.seed),
        "train": {
            "steps": int(c.steps),
            "lr": float(c.lr),
            "shift": int(c.shift),
            "batch_size": int(cfg.strategy.batch_size),
        },
    }


def _seeded(seed: int) -> torch.Generator:
    torch.manual_seed(seed)  # parameter initialisation of the freshly built model
    return torch.Generator().manual_seed(seed)


def pretrained_transceiver(cfg: DictConfig, name: str) -> tuple[VQVAETransceiver, bool]:
    """Transceiver ``name`` pre-trained in its environment (cached); ``(model, from_cache)``."""
    spec = transceiver_spec(cfg, name)
    env, tr = spec["env"], spec["train"]
    device = resolve_device(str(cfg.device))

    def build() -> VQVAETransceiver:
        with torch.random.fork_rng(devices=[]):
            _seeded(int(env["seed"]))
            return build_transceiver(cfg)

    def train(model: VQVAETransceiver) -> dict[str, Any]:
        images = node_data(cfg, env["source"], float(env["epsilon"]), "train").images.to(device)
        stats = train_transceiver(
            model.to(device),
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

    return load_or_train(cache_dir(cfg), "transceiver", spec, build, train)


def pretrained_classifier(cfg: DictConfig, source: str) -> tuple[ConvClassifier, bool]:
    """The frozen classifier of ``source`` (``mnist`` or ``mixed``), cached."""
    spec = classifier_spec(cfg, source)
    device = resolve_device(str(cfg.device))
    tr = spec["train"]

    def build() -> ConvClassifier:
        with torch.random.fork_rng(devices=[]):
            _seeded(spec["seed"])
            return build_classifier(cfg, source)

    def train(model: ConvClassifier) -> dict[str, Any]:
        ds = classifier_data(cfg, source)
        stats = train_classifier(
            model.to(device),
            ds.images.to(device),
            ds.labels.to(device),
            steps=tr["steps"],
            lr=tr["lr"],
            batch_size=tr["batch_size"],
            shift=tr["shift"],
            seed=spec["seed"],
        )
        return {"wall_s": stats.wall_s, "last_loss": stats.last_loss, "images": len(ds)}

    model, cached = load_or_train(cache_dir(cfg), "classifier", spec, build, train)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, cached
