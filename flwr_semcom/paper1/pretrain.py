"""Stage I training passes outside the split runtime: ``local`` and ``server`` placements.

Paper 1 (Zhao et al., arXiv 2503.13940), Algorithm 1 (joint pretraining) and Sec. III-A:
sample a batch, make two augmented views per modality, compute the pretraining loss (eq. 7;
DeCUR: intra eq. 10 + cross eq. 12-15; baselines: Barlow Twins eq. 19, SimCLR eq. 18 per
modality) and take a gradient step on the encoders (and projectors).

:func:`ssl_pass` runs one pass over a set of IDs for one or several modalities:

- placement ``local``: a device, its one modality, the intra-modal loss of the method;
- placement ``server``: the server, every modality; ``decur`` uses the full DeCUR loss (the
  server holds paired data), the single-modality baselines their loss per modality.

Batches and augmentation seeds come from the split runtime's
:func:`~flwr_semcom.split.schedule.train_batches` (stage name ``pretrain-local`` /
``pretrain-server``), so a pass is reproducible from the config alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from flwr_semcom.models.transmitter import DeviceTransmitter
from flwr_semcom.paper1.augment import two_views
from flwr_semcom.paper1.models import Settings, decur_loss, intra_loss, typed_settings
from flwr_semcom.paper1.stability import NonFiniteError
from flwr_semcom.split.schedule import train_batches

__all__ = ["PassStats", "ssl_pass"]


@dataclass
class PassStats:
    """Mean loss, gradient norms (mean, max) and samples of one pass."""

    loss: float
    grad_norm_mean: float
    grad_norm_max: float
    samples: int
    steps: int


def ssl_pass(
    models: Mapping[str, DeviceTransmitter],
    data: Mapping[str, torch.Tensor],
    ids: torch.Tensor,
    settings: Settings,
    *,
    method: str,
    round_: int,
    optimizer: torch.optim.Optimizer,
    stage_name: str,
    who: str = "",
) -> PassStats:
    """One pass of Stage I over ``ids``; returns its statistics.

    Parameters
    ----------
    models
        ``{modality: transmitter with projector}``; one entry for ``local``.
    data
        ``{modality: [N, C, H, W]}`` images (indexed by sample ID).
    ids
        Training IDs of the pass (label-free).
    settings
        Stage I settings (:class:`~flwr_semcom.paper1.settings.SSLSettings`: batch size,
        seed, augmentation, losses).
    method
        ``decur``, ``barlow_twins`` or ``simclr``.
    round_
        Stage I round (seeds the shuffle and the augmentations; named in errors).
    optimizer
        Optimizer over every model's parameters.
    stage_name
        Seed stream (``"pretrain-local"`` / ``"pretrain-server"``).
    who
        Added to error messages (e.g. ``"client rgb-0"``).

    Raises
    ------
    NonFiniteError
        On a non-finite loss or gradient (method, stage ``pretrain`` and round named); the
        step is not applied.
    """
    s = typed_settings(settings)
    aug = s.augment
    batches = train_batches(ids, s.batch_size, seed=s.seed, round_=round_, stage=stage_name)
    mods = list(models)
    full_decur = method == "decur" and len(mods) >= 2
    joint = decur_loss(s) if full_decur else None
    intra = None if full_decur else intra_loss(s, method)
    params = [p for m in mods for p in models[m].parameters() if p.requires_grad]
    suffix = f" ({who})" if who else ""
    for m in mods:
        models[m].train()
    total, samples, norms = 0.0, 0, []
    for b in batches:
        views = {m: two_views(data[m][b.ids], m, b.aug_seed, aug) for m in mods}
        p = {m: (models[m](views[m][0])["p"], models[m](views[m][1])["p"]) for m in mods}
        if joint is not None:
            loss = joint(p[mods[0]][0], p[mods[0]][1], p[mods[1]][0], p[mods[1]][1])
        else:
            assert intra is not None
            loss = sum((intra(p[m][0], p[m][1]) for m in mods), torch.zeros(()))
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteError(method, "pretrain", round_, f"loss ({value}){suffix}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sq = sum(float(q.grad.detach().double().pow(2).sum()) for q in params if q.grad is not None)
        if not math.isfinite(sq):
            raise NonFiniteError(method, "pretrain", round_, f"gradient{suffix}")
        optimizer.step()
        norms.append(math.sqrt(sq))
        total += value * b.size
        samples += b.size
    if not batches:
        return PassStats(math.nan, math.nan, math.nan, 0, 0)
    return PassStats(total / samples, sum(norms) / len(norms), max(norms), samples, len(batches))
