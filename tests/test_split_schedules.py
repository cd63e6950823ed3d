"""Client-step schedules of S > 1 (docs/schedules.md): ``exact`` and ``replay``.

- The client's computation (:func:`flwr_semcom.split.compute.apply_gradients`, what the Flower
  client runs between messages) driven by a plain loop equals the in-process reference
  (:func:`flwr_semcom.split.reference.run_reference`, an independent implementation) bit for
  bit, for both schedules.
- ``replay`` at S = 1 is exact S = 1; for S > 1 it differs from ``exact``.
- Hand-computed: on a linear device with plain SGD, one group of two batches gives
  W₂ = W₁ - η (g₂ + λ/B (W₁ - W₀) x₂) x₂ᵀ; the batch-norm statistics after a group are the
  average of the group's batch statistics at the final weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import pytest
import torch
from omegaconf import DictConfig
from torch import nn

from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import ConfigError, compose_config
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.paper1.stage2 import supervised_device, supervised_server
from flwr_semcom.split import BatchPlan, ClientTask
from flwr_semcom.split.compute import apply_gradients, forward_batches
from flwr_semcom.split.decoder import DecoderServer
from flwr_semcom.split.reference import ReferenceResult, run_reference
from flwr_semcom.split.schedule import client_plans, derive_seed, group, train_batches
from flwr_semcom.split.settings import (
    check_split_config,
    schedule_kwargs,
    server_gradients,
    split_kwargs,
)
from strategies.split_training import SplitTraining, server_state

TINY = (
    "data.num_samples=48 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=6 strategy.rounds=2 strategy.eval_batch_size=16"
)
CPU = torch.device("cpu")


def _diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _reference(cfg: DictConfig, **kwargs: object) -> ReferenceResult:
    torch.set_num_threads(1)
    server = supervised_server(cfg)
    clients = [supervised_device(cfg, p) for p in range(server.num_clients)]
    args: dict[str, object] = dict(
        rounds=int(cfg.strategy.rounds),
        batch_size=int(cfg.strategy.batch_size),
        steps_per_message=int(cfg.strategy.steps_per_message),
        seed=int(cfg.seed),
        evaluate=False,
    )
    args.update(schedule_kwargs(cfg))
    args["server_gradients"] = server_gradients(cfg)
    args.update(kwargs)
    return run_reference(server, clients, **args)  # type: ignore[arg-type]


def _client_compute_loop(
    cfg: DictConfig,
) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """The pass as the Flower client computes it: forward_batches at the group's start, the
    server's steps, then apply_gradients with the group's buffers (what client.split_step
    keeps between messages)."""
    torch.set_num_threads(1)
    server = supervised_server(cfg)
    n, seed = server.num_clients, int(cfg.seed)
    S, bs = int(cfg.strategy.steps_per_message), int(cfg.strategy.batch_size)
    sched = schedule_kwargs(cfg)
    clients = [supervised_device(cfg, p) for p in range(n)]
    opts = [c.make_optimizer(c.model.parameters()) for c in clients]
    for r in range(1, int(cfg.strategy.rounds) + 1):
        batches = train_batches(server.train_ids, bs, seed=seed, round_=r, stage="finetune")
        server.start_round(r)
        for dev, opt in zip(clients, opts):
            lr = dev.round_lr(r)
            assert lr is not None
            for pg in opt.param_groups:
                pg["lr"] = lr
        plans = [
            group(client_plans(batches, c, seed=seed, stage="finetune", round_=r), S)
            for c in range(n)
        ]
        for j, grp in enumerate(group(batches, S)):
            before = [{k: v.clone() for k, v in d.model.named_buffers()} for d in clients]
            ups = [forward_batches(d, plans[i][j], True, CPU) for i, d in enumerate(clients)]
            grads: list[list[dict[str, torch.Tensor]]] = [[] for _ in range(n)]
            for t, b in enumerate(grp):
                torch.manual_seed(derive_seed(seed, "server", "finetune", r, b.index))
                step = server.train_step([ups[c][t] for c in range(n)], b)
                for c in range(n):
                    grads[c].append(step.grads[c])
            if server_gradients(cfg) == "group_end":
                for t, b in enumerate(grp):
                    torch.manual_seed(derive_seed(seed, "server", "finetune", r, b.index))
                    at_end = server.input_gradients([ups[c][t] for c in range(n)], b)
                    for c in range(n):
                        grads[c][t] = at_end[c]
            for c in range(n):
                apply_gradients(clients[c], opts[c], plans[c][j], grads[c], before[c], CPU, **sched)
    states = [{k: v.detach().clone() for k, v in d.model.state_dict().items()} for d in clients]
    return states, {k: v.detach().clone() for k, v in server.model.state_dict().items()}


@pytest.mark.parametrize(
    "extra",
    [
        "strategy.schedule=exact",
        "strategy.schedule=replay strategy.schedule_compensation=0.0",
        "strategy.schedule=replay strategy.schedule_compensation=0.7",
        "strategy.schedule=replay strategy.schedule_compensation=0.7 strategy.lr_schedule=cosine",
        "strategy.schedule=replay strategy.server_gradients=group_end",
        "strategy.schedule=exact strategy.server_gradients=group_end",
    ],
)
def test_client_compute_equals_reference_bit_for_bit(extra: str) -> None:
    cfg = compose_config("split_supervised", f"{TINY} strategy.steps_per_message=3 {extra}")
    clients, server = _client_compute_loop(cfg)
    ref = _reference(cfg)
    for p in (0, 1):
        assert _diff(clients[p], ref.client_states[p]) == 0.0
    assert _diff(server, ref.server_state) == 0.0


@pytest.mark.parametrize("where", ["step", "group_end"])
def test_flower_run_equals_reference_under_replay(where: str) -> None:
    """The Flower client (InProcessGrid: ClientApp, messages, records, context.state) under
    ``replay`` equals the reference, and differs from the Flower run under ``exact``; with
    the server's gradients at each step and at the group's end."""
    overrides = (
        f"{TINY} strategy.steps_per_message=3 strategy.schedule=replay "
        f"strategy.schedule_compensation=0.7 strategy.server_gradients={where}"
    )
    results = {}
    for ov in (overrides, f"{TINY} strategy.steps_per_message=3"):
        cfg = compose_config("split_supervised", ov)
        torch.set_num_threads(1)
        nodes = [{"partition-id": i, "num-partitions": 2} for i in range(2)]
        grid = InProcessGrid(client_app, nodes, {"experiment": "split_supervised", "overrides": ov})
        strategy = SplitTraining(
            supervised_server(cfg), client_task="rgbd_supervised", **split_kwargs(cfg)
        )
        strategy.start(grid)
        results[ov] = (strategy.fetch_client_states(grid), server_state(strategy))
    clients, server = results[overrides]
    ref = _reference(compose_config("split_supervised", overrides))
    for p in (0, 1):
        assert _diff(clients[p], ref.client_states[p]) <= 1e-5
    assert _diff(server, ref.server_state) <= 1e-5
    exact_clients, _ = results[f"{TINY} strategy.steps_per_message=3"]
    assert _diff(clients[0], exact_clients[0]) > 1e-4


def test_replay_at_one_step_per_message_is_exact_and_differs_for_s_above_one() -> None:
    s1 = "strategy.steps_per_message=1"
    exact = _reference(compose_config("split_supervised", f"{TINY} {s1}"))
    replay = _reference(
        compose_config(
            "split_supervised",
            f"{TINY} {s1} strategy.schedule=replay strategy.schedule_compensation=0.7",
        )
    )
    for p in (0, 1):
        assert _diff(exact.client_states[p], replay.client_states[p]) == 0.0
    s3 = "strategy.steps_per_message=3"
    exact3 = _reference(compose_config("split_supervised", f"{TINY} {s3}"))
    replay3 = _reference(
        compose_config(
            "split_supervised",
            f"{TINY} {s3} strategy.schedule=replay strategy.schedule_compensation=0",
        )
    )
    comp3 = _reference(
        compose_config(
            "split_supervised",
            f"{TINY} {s3} strategy.schedule=replay strategy.schedule_compensation=0.7",
        )
    )
    assert _diff(exact3.client_states[0], replay3.client_states[0]) > 1e-5
    assert _diff(replay3.client_states[0], comp3.client_states[0]) > 1e-5


class _Linear(nn.Module):
    def __init__(self, w: torch.Tensor, bn: bool = False) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.bn = nn.BatchNorm1d(w.shape[0], affine=False) if bn else None

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        z = x @ self.w.T
        return {"z_hat": z if self.bn is None else self.bn(z)}


class _Task(ClientTask):
    role = "lin"

    def __init__(self, model: nn.Module, data: torch.Tensor) -> None:
        self.model = model
        self.data = data

    def inputs(self, batch: BatchPlan, train: bool) -> tuple[torch.Tensor, ...]:
        return (self.data[batch.ids],)

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=0.1)


def _plans() -> list[BatchPlan]:
    return [BatchPlan(0, torch.tensor([0, 1]), 0, 1), BatchPlan(1, torch.tensor([2, 3]), 0, 2)]


def test_replay_hand_values_on_a_linear_device() -> None:
    """z = W x, loss gradients g₁, g₂ given, SGD lr η = 0.1, B = 2, λ = 0.5:
    W₁ = W₀ - η g₁ᵀ X₁ and W₂ = W₁ - η (g₂ + λ/B (X₂ W₁ᵀ - X₂ W₀ᵀ))ᵀ X₂; exact takes
    W₂ = W₁ - η g₂ᵀ X₂ (for a linear map the Jacobian does not depend on W)."""
    torch.manual_seed(0)
    w0, data = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    g = [{"z_hat": torch.randn(2, 3, dtype=torch.float64)} for _ in range(2)]
    x1, x2 = data[:2], data[2:]
    eta, lam = 0.1, 0.5
    w1 = w0 - eta * g[0]["z_hat"].T @ x1
    expected = {
        "exact": w1 - eta * g[1]["z_hat"].T @ x2,
        "replay": w1 - eta * (g[1]["z_hat"] + lam / 2 * (x2 @ w1.T - x2 @ w0.T)).T @ x2,
    }
    for schedule, want in expected.items():
        task = _Task(_Linear(w0), data)
        opt = task.make_optimizer(task.model.parameters())
        apply_gradients(task, opt, _plans(), g, {}, CPU, schedule=schedule, compensation=lam)
        got = task.model.state_dict()["w"]
        assert torch.allclose(got, want, atol=1e-12), schedule
    assert not torch.allclose(expected["exact"], expected["replay"])


def test_replay_sets_batch_norm_statistics_to_the_group_average_at_the_final_weights() -> None:
    """After a group of two, the running statistics are the plain average of the two batches'
    statistics at the final weights W₂ (mean of means, mean of unbiased variances), computed by
    hand here; ``exact`` keeps the statistics of the uplink forward at W₀. The batch counter
    counts each batch once."""
    torch.manual_seed(1)
    w0, data = torch.randn(3, 4), torch.randn(4, 4)
    g = [{"z_hat": 10.0 * torch.randn(2, 3)} for _ in range(2)]
    plans = _plans()
    results, weights = {}, {}
    for schedule in ("exact", "replay"):
        task = _Task(_Linear(w0, bn=True), data)
        opt = task.make_optimizer(task.model.parameters())
        before = {k: v.clone() for k, v in task.model.named_buffers()}
        forward_batches(task, plans, True, CPU)  # the uplink forward of the group
        apply_gradients(task, opt, plans, g, before, CPU, schedule=schedule, compensation=0.3)
        results[schedule] = {k: v.clone() for k, v in task.model.named_buffers()}
        weights[schedule] = task.model.state_dict()["w"].clone()
    z = [data[p.ids] @ weights["replay"].T for p in plans]
    mean = (z[0].mean(0) + z[1].mean(0)) / 2
    var = (z[0].var(0, unbiased=True) + z[1].var(0, unbiased=True)) / 2
    assert torch.allclose(results["replay"]["bn.running_mean"], mean, atol=1e-6)
    assert torch.allclose(results["replay"]["bn.running_var"], var, atol=1e-5)
    assert int(results["replay"]["bn.num_batches_tracked"]) == 2
    z_sent = [data[p.ids] @ w0.T for p in plans]  # exact: EMA (momentum 0.1) of the uplink
    ema = 0.9 * (0.9 * torch.zeros(3) + 0.1 * z_sent[0].mean(0)) + 0.1 * z_sent[1].mean(0)
    assert torch.allclose(results["exact"]["bn.running_mean"], ema, atol=1e-6)
    assert int(results["exact"]["bn.num_batches_tracked"]) == 2


class _BNHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.bn(z))
        return out


def _decoder() -> DecoderServer:
    torch.manual_seed(3)
    return DecoderServer(
        _BNHead(),
        torch.tensor([0, 1, 2, 1, 0, 2]),
        train_ids=torch.arange(6),
        test_ids=torch.arange(6),
        num_clients=2,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9),
    )


def test_input_gradients_are_the_steps_gradients_at_the_current_weights_and_change_nothing() -> (
    None
):
    server = _decoder()
    batch = BatchPlan(index=0, ids=torch.tensor([0, 1, 2, 3, 4, 5]), aug_seed=0, noise_seed=0)
    ups = [{"z_hat": torch.randn(6, 2)}, {"z_hat": torch.randn(6, 2)}]
    server.train_step(ups, batch)  # φ has moved once; momentum and BN statistics are set
    twin = copy.deepcopy(server)
    before = {k: v.clone() for k, v in server.model.state_dict().items()}
    momentum = [
        server.optimizer.state[p]["momentum_buffer"].clone() for p in server.model.parameters()
    ]
    got = server.input_gradients(ups, batch)
    # what a step at these weights would return (on a twin, which then moves)
    expected = twin.train_step(ups, batch).grads
    for g, e in zip(got, expected):
        assert torch.equal(g["z_hat"], e["z_hat"])
    # by hand: L = CE(fc(bn(concat z))), ∂L/∂z through autograd of an independent forward
    z = torch.cat([u["z_hat"] for u in ups], 1).requires_grad_(True)
    bn, fc = server.model.bn, server.model.fc
    zn = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    loss = torch.nn.functional.cross_entropy(zn @ fc.weight.T + fc.bias, server.labels)
    (dz,) = torch.autograd.grad(loss, z)
    assert torch.allclose(torch.cat([got[0]["z_hat"], got[1]["z_hat"]], 1), dz, atol=1e-6)
    # nothing of the server moved: weights, running statistics, counters, momentum
    after = server.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for p, m in zip(server.model.parameters(), momentum):
        assert torch.equal(server.optimizer.state[p]["momentum_buffer"], m)
    assert not torch.equal(twin.model.fc.weight, server.model.fc.weight)  # a step would move


def test_group_end_gradients_differ_from_step_gradients_by_the_servers_moves() -> None:
    s3 = f"{TINY} strategy.steps_per_message=3 strategy.schedule=replay"
    step = _reference(compose_config("split_supervised", s3))
    ge = "strategy.server_gradients=group_end"
    end = _reference(compose_config("split_supervised", f"{s3} {ge}"))
    # the server's own steps use the same uplinks at the same weights only in the first group
    assert _diff(step.client_states[0], end.client_states[0]) > 1e-4
    assert _diff(step.server_state, end.server_state) > 1e-6


def test_schedule_keys_are_checked() -> None:
    assert schedule_kwargs(compose_config("split_supervised", TINY)) == {
        "schedule": "exact",
        "compensation": 0.2,
    }
    for bad, msg in (
        ("strategy.schedule=stale", "strategy.schedule: invalid value 'stale'"),
        ("strategy.schedule_compensation=-1.0", "strategy.schedule_compensation: invalid value"),
        (
            "strategy.server_gradients=end",
            "strategy.server_gradients: invalid value 'end'; expected one of step, group_end",
        ),
    ):
        with pytest.raises(ConfigError, match=msg):
            check_split_config(compose_config("split_supervised", f"{TINY} {bad}"))
    with pytest.raises(ValueError, match="schedule must be one of exact, replay"):
        task = _Task(_Linear(torch.zeros(3, 4)), torch.zeros(4, 4))
        apply_gradients(
            task, task.make_optimizer(task.model.parameters()), [], [], {}, CPU, schedule="x"
        )
