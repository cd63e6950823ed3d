"""Local training and evaluation of a multi-task link on one device (paper 3, eq. 16).

Training minimises ``L = Σ_t λ_t L_t`` with Adam (the paper's optimiser; its lr 1e-4 and batch
8 are too slow for our budget, see ``conf/experiment/multitask.yaml``). The AWGN SNR of every
training sample is drawn uniformly from ``multitask.train_snr_db`` (one model per bandwidth
ratio serves every evaluation SNR; the paper trains and tests at each SNR — see
``docs/multitask.md``). Evaluation passes the images through the channel at each SNR of
``channel.snr_db`` with a seeded noise generator and returns additive metric sums.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from flwr_semcom.channels import AWGNChannel
from flwr_semcom.multitask.data import Batch
from flwr_semcom.multitask.spec import SOURCE_DIMS, LinkSpec
from flwr_semcom.multitask.system import MultiTaskSemCom, symbols_for_ratio
from flwr_semcom.multitask.tasks import Task, build_task

__all__ = ["TrainStats", "build_model", "build_tasks", "evaluate", "train_local"]


def build_tasks(link: LinkSpec) -> list[Task]:
    """The link's tasks (10 classes for both data sets; 3-channel reconstruction)."""
    return [build_task(t, num_classes=10, out_channels=3) for t in link.tasks]


def build_model(link: LinkSpec, method: str, ratio: float, seed: int) -> MultiTaskSemCom:
    """The link of ``method`` at bandwidth ratio ``ratio``, initialised from ``seed``.

    The global RNG is forked, so building a model draws nothing from the caller's stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultiTaskSemCom(
            build_tasks(link),
            method,
            symbols_for_ratio(float(ratio), SOURCE_DIMS),
            image_size=32,
            in_channels=3,
            widths=list(link.widths),
            blocks_per_stage=link.blocks_per_stage,
            node_channels=link.node_channels,
            heads=link.heads,
            iterations=link.iterations,
            relation_hidden=link.relation_hidden,
            decoder_hidden=link.decoder_hidden,
        )


@dataclass(frozen=True)
class TrainStats:
    """What one device's local training reports."""

    steps: int
    samples: int
    loss: float
    task_losses: dict[str, float]
    wall_s: float


def task_losses(
    model: MultiTaskSemCom, out: dict[str, torch.Tensor], batch: Batch
) -> dict[str, torch.Tensor]:
    """``{task: L_t}`` of a batch's predictions."""
    return {t.name: t.loss(out[t.name], t.target(batch)) for t in model.tasks}


def train_local(
    model: MultiTaskSemCom,
    data: Batch,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    loss_weights: Sequence[float],
    snr_range: Sequence[float],
    seed: int,
) -> TrainStats:
    """``epochs`` passes of Adam over ``data`` through AWGN at a random SNR per sample."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = int(data["label"].shape[0])
    lo, hi = float(snr_range[0]), float(snr_range[1])
    steps, total, sums = 0, 0.0, {t: 0.0 for t in model.task_names}
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            if idx.numel() < 2:  # batch norm needs two samples
                continue
            batch = {k: v[idx] for k, v in data.items()}
            snr = lo + (hi - lo) * torch.rand(idx.numel(), generator=g)
            out = model(batch["image"], AWGNChannel(snr), generator=g)
            losses = task_losses(model, out["outputs"], batch)  # type: ignore[arg-type]
            loss = sum(w * losses[t] for w, t in zip(loss_weights, model.task_names))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            steps += 1
            total += float(loss.detach())  # type: ignore[union-attr]
            for t in sums:
                sums[t] += float(losses[t].detach())
    return TrainStats(
        steps=steps,
        samples=n * epochs,
        loss=total / max(steps, 1),
        task_losses={t: v / max(steps, 1) for t, v in sums.items()},
        wall_s=time.perf_counter() - t0,
    )


@torch.no_grad()
def evaluate(
    model: MultiTaskSemCom,
    data: Batch,
    snrs: Sequence[float],
    *,
    batch_size: int,
    seed: int,
) -> dict[float, dict[str, dict[str, float]]]:
    """Metric sums ``{snr_db: {task: {stat: sum}}}`` of ``data`` sent at each SNR."""
    model.eval()
    n = int(data["label"].shape[0])
    out: dict[float, dict[str, dict[str, float]]] = {}
    for snr in snrs:
        g = torch.Generator().manual_seed(seed)
        sums: dict[str, dict[str, float]] = {t.name: {} for t in model.tasks}
        for start in range(0, n, batch_size):
            batch = {k: v[start : start + batch_size] for k, v in data.items()}
            res = model(batch["image"], AWGNChannel(float(snr)), generator=g)
            preds = res["outputs"]
            assert isinstance(preds, dict)
            for t in model.tasks:
                for key, val in t.stats(preds[t.name], t.target(batch)).items():
                    sums[t.name][key] = sums[t.name].get(key, 0.0) + val
        out[float(snr)] = sums
    return out
