"""In-process reference of split training: the same schedule in one plain PyTorch loop.

The specification the Flower run must reproduce (docs/split.md, "The S schedule"): the same
client and server tasks (modules, initial weights, optimizers), the same batches and seeds
(:mod:`flwr_semcom.split.schedule`) and the same order of operations, without messages,
records or ``context.state``. For every group of S batches:

1. every client computes the uplink of its S batches at its current weights θ_start
   (train mode; batch-norm statistics updated once per batch);
2. the server takes one optimizer step per batch, in order, and keeps ∂L/∂uplink;
3. every client takes one optimizer step per batch, in order, each with the gradient of its
   batch's loss *at θ_start* (the weights that produced the features).

Step 3 has two implementations that must agree: ``recompute=True`` (default) replays each
forward on a frozen copy of the client model taken before step 1 (``copy.deepcopy``: weights
θ_start, buffers as the original forward saw them), which is what a client must do between
messages; ``recompute=False`` keeps the autograd graphs of step 1 and back-propagates them
(all S parameter gradients are taken before the first step). Neither shares code with the
Flower client (:mod:`flwr_semcom.split.client`, which uses ``torch.func.functional_call``).

``schedule="replay"`` (docs/schedules.md) changes step 3 only: the client's batch-norm
buffers go back to their values before step 1, and batch ``t``'s gradient
``g_t + compensation / B_t · (ẑ_t(θ_{t-1}) - ẑ_t(θ_start))`` is back-propagated through a
forward at the live weights θ_{t-1} (which updates the statistics); ``ẑ_t(θ_start)`` is
recomputed on the frozen copy. A group of two or more batches then sets the running
statistics to the average of the group's batch statistics at the final weights (PreciseBN).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from flwr_semcom.split.schedule import (
    client_plans,
    derive_seed,
    eval_batches,
    train_batches,
)
from flwr_semcom.split.tasks import ClientTask, ServerTask

__all__ = ["ReferenceResult", "run_reference"]


@dataclass
class ReferenceResult:
    """Final weights and per-round metrics of a reference run."""

    client_states: dict[int, dict[str, torch.Tensor]]
    server_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    """Per round: ``loss``, ``train_accuracy``, ``train_time_s``, ``critical_path_s`` (the
    pass's time if the clients ran in parallel with no messaging cost), ``test_loss``,
    ``test_accuracy``, ``eval_time_s``, ``wall_time_s``."""


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _forward(
    client: ClientTask, model: torch.nn.Module, batch: Any, train: bool, device: torch.device
) -> dict[str, torch.Tensor]:
    torch.manual_seed(batch.noise_seed)
    xs = tuple(x.to(device) for x in client.inputs(batch, train))
    g = torch.Generator(device=device).manual_seed(batch.noise_seed)
    out: dict[str, torch.Tensor] = model(*xs, generator=g)
    return out


def _replay_steps(
    client: ClientTask,
    model: torch.nn.Module,
    shadow: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batches: Sequence[Any],
    grads: Sequence[dict[str, torch.Tensor]],
    compensation: float,
    device: torch.device,
) -> None:
    """Step 3 of the ``replay`` schedule (the shadow holds θ_start and the buffers before step
    1; the live model's buffers are reset to them and updated by the live forwards)."""
    with torch.no_grad():
        for (_, buf), (_, kept) in zip(model.named_buffers(), shadow.named_buffers()):
            buf.copy_(kept)
    model.train()
    shadow.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for t, b in enumerate(batches):
        out = _forward(client, model, b, True, device)
        names = sorted(grads[t])
        g = [grads[t][k] for k in names]
        if compensation and t > 0:
            with torch.no_grad():
                sent = _forward(client, shadow, b, True, device)
            lam = float(compensation) / b.size
            g = [gk + lam * (out[k].detach() - sent[k]) for gk, k in zip(g, names)]
        pg = torch.autograd.grad([out[k] for k in names], params, g, allow_unused=True)
        for p, gp in zip(params, pg):
            p.grad = gp
        opt.step()
        opt.zero_grad(set_to_none=True)
    if len(batches) < 2:
        return
    # PreciseBN over the group at the final weights: a fresh copy of the model accumulates the
    # plain average of the batches' statistics; its statistics replace the live ones
    fresh = copy.deepcopy(model)
    norms = [
        m
        for m in fresh.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        for b in batches:
            _forward(client, fresh, b, True, device)
        live = dict(model.named_buffers())
        for name, buf in fresh.named_buffers():
            if not name.endswith("num_batches_tracked"):
                live[name].copy_(buf)


def run_reference(
    server: ServerTask,
    clients: Sequence[ClientTask],
    *,
    rounds: int,
    batch_size: int,
    steps_per_message: int = 1,
    eval_batch_size: int = 256,
    seed: int = 0,
    stage: str = "finetune",
    drop_last: bool = False,
    recompute: bool = True,
    schedule: str = "exact",
    compensation: float = 0.0,
    server_gradients: str = "step",
    evaluate: bool = True,
    device: str | torch.device = "cpu",
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> ReferenceResult:
    """Train like :class:`strategies.split_training.SplitTraining`, in one process.

    Parameters
    ----------
    server
        The server task (its model and optimizer are trained in place).
    clients
        One client task per partition, in partition order (trained in place).
    rounds, batch_size, steps_per_message, eval_batch_size, seed, stage, drop_last
        As the strategy's arguments of the same names (``stage`` names the seed streams).
    recompute
        Replay the forward on a frozen copy (True) or keep the autograd graphs (False);
        ``exact`` only (``replay`` always recomputes).
    schedule, compensation
        The client-step schedule (``exact``, ``replay``) and ``replay``'s feature-space
        delay compensation λ (``strategy.schedule`` / ``strategy.schedule_compensation``).
    server_gradients
        ``step``: each batch's ∂L/∂uplink at the server weights of its own step;
        ``group_end``: all of a group's at the weights after its last step
        (``strategy.server_gradients``, docs/schedules.md).
    evaluate
        Evaluate on the test IDs after every pass.
    device
        Where the models run.
    on_round
        Called with each round's metrics row.
    """
    device = torch.device(device)
    seed, S = int(seed), int(steps_per_message)
    if schedule not in ("exact", "replay"):
        raise ValueError(f"schedule must be exact or replay, got {schedule!r}")
    replay = schedule == "replay"
    if server_gradients not in ("step", "group_end"):
        raise ValueError(f"server_gradients must be step or group_end, got {server_gradients!r}")
    recompute = recompute or replay
    server.model.to(device)
    n = server.num_clients
    if len(clients) != n:
        raise ValueError(f"{len(clients)} client tasks for a server task of {n} clients")
    models = [c.model.to(device) for c in clients]
    opts = [c.make_optimizer(m.parameters()) for c, m in zip(clients, models)]
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for r in range(1, int(rounds) + 1):
        t0 = time.perf_counter()
        batches = train_batches(
            server.train_ids, int(batch_size), seed=seed, round_=r, stage=stage, drop_last=drop_last
        )
        plans = [client_plans(batches, c, seed=seed, stage=stage, round_=r) for c in range(n)]
        server.start_round(r)
        for client, opt in zip(clients, opts):
            lr = client.round_lr(r)
            if lr is not None:
                for group in opt.param_groups:
                    group["lr"] = lr
        sums = {"n": 0.0, "correct": 0.0, "loss_sum": 0.0}
        critical = 0.0  # Σ over groups of slowest client forward + server + slowest client step
        for lo in range(0, len(batches), S):
            # 1. client forwards at θ_start
            shadows = [copy.deepcopy(m) if recompute else None for m in models]
            ups: list[list[dict[str, torch.Tensor]]] = []
            slowest = 0.0
            for c, model in enumerate(models):
                tc = time.perf_counter()
                model.train()
                with torch.set_grad_enabled(not recompute):
                    ups.append(
                        [
                            _forward(clients[c], model, b, True, device)
                            for b in plans[c][lo : lo + S]
                        ]
                    )
                slowest = max(slowest, time.perf_counter() - tc)
            critical += slowest
            # 2. server steps
            ts = time.perf_counter()
            grads: list[list[dict[str, torch.Tensor]]] = [[] for _ in range(n)]
            for t, batch in enumerate(batches[lo : lo + S]):
                torch.manual_seed(derive_seed(seed, "server", stage, r, batch.index))
                step = server.train_step(
                    [{k: v.detach() for k, v in ups[c][t].items()} for c in range(n)], batch
                )
                for c in range(n):
                    grads[c].append(step.grads[c])
                for k in sums:
                    sums[k] += float(step.stats.get(k, 0.0))
            if server_gradients == "group_end":
                for t, batch in enumerate(batches[lo : lo + S]):
                    torch.manual_seed(derive_seed(seed, "server", stage, r, batch.index))
                    at_end = server.input_gradients(
                        [{k: v.detach() for k, v in ups[c][t].items()} for c in range(n)], batch
                    )
                    for c in range(n):
                        grads[c][t] = at_end[c]
            critical += time.perf_counter() - ts
            # 3. client steps with the gradients at θ_start
            slowest = 0.0
            for c, model in enumerate(models):
                tc = time.perf_counter()
                params = [p for p in model.parameters() if p.requires_grad]
                if replay:
                    shadow = shadows[c]
                    assert shadow is not None
                    _replay_steps(
                        clients[c],
                        model,
                        shadow,
                        opts[c],
                        plans[c][lo : lo + S],
                        grads[c],
                        compensation,
                        device,
                    )
                elif recompute:
                    shadow = shadows[c]
                    assert shadow is not None
                    shadow.train()
                    shadow_params = [p for p in shadow.parameters() if p.requires_grad]
                    for t, b in enumerate(plans[c][lo : lo + S]):
                        out = _forward(clients[c], shadow, b, True, device)
                        names = sorted(grads[c][t])
                        pg = torch.autograd.grad(
                            [out[k] for k in names],
                            shadow_params,
                            [grads[c][t][k] for k in names],
                            allow_unused=True,
                        )
                        for p, g in zip(params, pg):
                            p.grad = g
                        opts[c].step()
                        opts[c].zero_grad(set_to_none=True)
                else:
                    all_pg = []
                    for t in range(len(ups[c])):
                        names = sorted(grads[c][t])
                        all_pg.append(
                            torch.autograd.grad(
                                [ups[c][t][k] for k in names],
                                params,
                                [grads[c][t][k] for k in names],
                                allow_unused=True,
                            )
                        )
                    for pg in all_pg:
                        for p, g in zip(params, pg):
                            p.grad = g
                        opts[c].step()
                        opts[c].zero_grad(set_to_none=True)
                slowest = max(slowest, time.perf_counter() - tc)
            critical += slowest
        train_time = time.perf_counter() - t0
        cnt = max(sums["n"], 1.0)
        row: dict[str, Any] = {
            "round": r,
            "loss": sums["loss_sum"] / cnt,
            "train_accuracy": sums["correct"] / cnt,
            "train_time_s": train_time,
            "critical_path_s": critical,
        }
        if evaluate:
            t1 = time.perf_counter()
            ev = {"n": 0.0, "correct": 0.0, "loss_sum": 0.0}
            test = eval_batches(server.test_ids, int(eval_batch_size))
            eplans = [client_plans(test, c, seed=seed, stage="eval", round_=0) for c in range(n)]
            with torch.no_grad():
                for t, batch in enumerate(test):
                    ups_eval = []
                    for c, model in enumerate(models):
                        model.eval()
                        ups_eval.append(_forward(clients[c], model, eplans[c][t], False, device))
                    stats = server.eval_step(ups_eval, batch)
                    for k in ev:
                        ev[k] += float(stats.get(k, 0.0))
            cnt = max(ev["n"], 1.0)
            row.update(
                test_loss=ev["loss_sum"] / cnt,
                test_accuracy=ev["correct"] / cnt,
                eval_time_s=time.perf_counter() - t1,
            )
        row["wall_time_s"] = time.perf_counter() - t_start
        history.append(row)
        if on_round is not None:
            on_round(row)
    return ReferenceResult(
        {i: _state(m) for i, m in enumerate(models)}, _state(server.model), history
    )
