"""Equivalence: the Flower split run equals the in-process reference, for S = 1 and S > 1.

Fast variants run the strategy on :class:`~flwr_semcom.inprocess.InProcessGrid` (same
ClientApp, messages, records and ``context.state`` as the engines, no Ray); the slow ones run
``flwr.simulation.run_simulation`` with a test ServerApp wrapping the strategy. Independent
checks of the reference itself: for S = 1 it equals joint end-to-end training of client and
server models (no split), and its two ways of taking the gradient at θ_start (replay on a frozen
copy / keep the autograd graphs) agree, also with dropout in the client model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _sim import bundled_client_app  # tests/ is on sys.path
from flwr.app import Context
from flwr.clientapp import ClientApp
from omegaconf import DictConfig
from torch import nn

from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import compose_config
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.paper1.rgbd import scheduled_lr
from flwr_semcom.paper1.stage2 import SUPERVISED_CLIENT_TASK, supervised_device, supervised_server
from flwr_semcom.split import (
    BatchPlan,
    ClientTask,
    ServerTask,
    add_split_client,
    derive_seed,
    split_kwargs,
)
from flwr_semcom.split.reference import ReferenceResult, run_reference
from flwr_semcom.split.schedule import client_plans, train_batches
from strategies.split_training import SplitTraining, server_state

TINY = (
    "data.num_samples=48 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=6 strategy.rounds=2 strategy.eval_batch_size=16"
)
TOL = 1e-5


def _max_diff(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _strategy(
    cfg: DictConfig, server: ServerTask | None = None, client_task: str = SUPERVISED_CLIENT_TASK
) -> SplitTraining:
    torch.set_num_threads(int(cfg.num_threads))  # as the runner and the nodes do
    return SplitTraining(
        server or supervised_server(cfg), client_task=client_task, **split_kwargs(cfg)
    )


def _reference(
    cfg: DictConfig,
    server: ServerTask | None = None,
    clients: Sequence[ClientTask] | None = None,
    **kwargs: Any,
) -> ReferenceResult:
    """The in-process reference with the schedule of ``cfg`` (typed arguments)."""
    torch.set_num_threads(int(cfg.num_threads))  # as the runner and the nodes do
    server = server or supervised_server(cfg)
    if clients is None:
        clients = [supervised_device(cfg, i) for i in range(server.num_clients)]
    k = split_kwargs(cfg)
    schedule = {
        key: k[key]
        for key in ("rounds", "batch_size", "steps_per_message", "eval_batch_size", "seed")
    }
    schedule.update(drop_last=k["drop_last"], device=k["device"])
    schedule.update(kwargs)
    return run_reference(server, clients, **schedule)


def _flower_inprocess(
    overrides: str,
    server_task: ServerTask | None = None,
    clients: int = 2,
    app: ClientApp = client_app,
    client_task: str = SUPERVISED_CLIENT_TASK,
) -> tuple[SplitTraining, dict[int, dict[str, torch.Tensor]]]:
    cfg = compose_config("split_supervised", overrides)
    nodes = [{"partition-id": i, "num-partitions": clients} for i in range(clients)]
    grid = InProcessGrid(app, nodes, {"experiment": "split_supervised", "overrides": overrides})
    strategy = _strategy(cfg, server_task, client_task)
    strategy.start(grid)
    return strategy, strategy.fetch_client_states(grid)


@pytest.mark.parametrize(("steps", "schedule"), [(1, "constant"), (3, "constant"), (3, "cosine")])
def test_inprocess_flower_run_equals_reference(steps: int, schedule: str) -> None:
    """Also with a per-round cosine lr: a stale group spanning no round boundary is applied
    with the lr of its own round (the runtime keys it by the round of the pending batch)."""
    overrides = f"{TINY} strategy.steps_per_message={steps} strategy.lr_schedule={schedule}"
    strategy, clients = _flower_inprocess(overrides)
    ref = _reference(compose_config("split_supervised", overrides))
    for p in (0, 1):
        assert _max_diff(clients[p], ref.client_states[p]) <= TOL
    assert _max_diff(server_state(strategy), ref.server_state) <= TOL
    for ours, theirs in zip(strategy.history, ref.history):
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-6)
        assert ours["test_accuracy"] == pytest.approx(theirs["test_accuracy"], abs=1e-9)
    # something was learnt, and S changes the trajectory
    first = supervised_device(compose_config("split_supervised", overrides), 0)
    assert _max_diff(first.model.state_dict(), ref.client_states[0]) > 1e-3


def test_three_clients_and_a_spare_node() -> None:
    """Any number of clients: three devices (two see RGB); a fourth node is left out."""
    overrides = (
        f"{TINY} strategy.rounds=1 strategy.steps_per_message=2 data.modalities=[rgb,depth,rgb]"
    )
    strategy, clients = _flower_inprocess(overrides, clients=4)
    assert [c.role for c in strategy.clients] == ["rgb", "depth", "rgb"]
    ref = _reference(compose_config("split_supervised", overrides))
    for p in (0, 1, 2):
        assert _max_diff(clients[p], ref.client_states[p]) <= TOL
    assert _max_diff(server_state(strategy), ref.server_state) <= TOL
    assert _max_diff(clients[0], clients[2]) > 1e-3  # own initial weights and channel noise


def test_steps_per_message_changes_the_result_but_replay_and_graph_agree() -> None:
    s1 = _reference(
        compose_config("split_supervised", f"{TINY} strategy.steps_per_message=1"), rounds=1
    )
    cfg3 = compose_config("split_supervised", f"{TINY} strategy.steps_per_message=3")
    s3 = _reference(cfg3, rounds=1)
    s3_graph = _reference(cfg3, rounds=1, recompute=False)
    assert _max_diff(s1.client_states[0], s3.client_states[0]) > 1e-4
    for p in (0, 1):
        assert _max_diff(s3.client_states[p], s3_graph.client_states[p]) <= TOL
    assert _max_diff(s3.server_state, s3_graph.server_state) <= TOL


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_reference_with_one_step_per_message_is_joint_end_to_end_training(schedule: str) -> None:
    """S = 1 split learning = training encoder(s) and decoder as one network (no split).

    With ``cosine`` every optimizer here gets the round's lr from the hand-written formula.
    """
    cfg = compose_config(
        "split_supervised", f"{TINY} strategy.steps_per_message=1 strategy.lr_schedule={schedule}"
    )
    ref = _reference(cfg, rounds=2, evaluate=False)
    server = supervised_server(cfg)
    clients = [supervised_device(cfg, i) for i in range(2)]
    opts = [c.make_optimizer(c.model.parameters()) for c in clients]
    seed = int(cfg.seed)
    lr0 = float(cfg.strategy.lr)
    for r in (1, 2):
        # rounds = 2, lr_min = 0: cosine gives lr0 in round 1 and lr0 (1 + cos(pi/2)) / 2 in round 2
        lr = lr0 if schedule == "constant" or r == 1 else lr0 * 0.5
        for o in (server.optimizer, *opts):
            for group in o.param_groups:
                group["lr"] = lr
        batches = train_batches(server.train_ids, int(cfg.strategy.batch_size), seed=seed, round_=r)
        plans = [client_plans(batches, c, seed=seed, stage="finetune", round_=r) for c in range(2)]
        for t, batch in enumerate(batches):
            ups = []
            for c, client in enumerate(clients):
                b = plans[c][t]
                client.model.train()
                torch.manual_seed(b.noise_seed)
                g = torch.Generator().manual_seed(b.noise_seed)
                ups.append(client.model(*client.inputs(b, True), generator=g))
            torch.manual_seed(derive_seed(seed, "server", "finetune", r, batch.index))
            server.model.train()
            loss, _ = server.loss(ups, batch)
            for o in (server.optimizer, *opts):
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in (server.optimizer, *opts):
                o.step()
    for c in range(2):
        assert _max_diff(clients[c].model.state_dict(), ref.client_states[c]) <= TOL
    assert _max_diff(server.model.state_dict(), ref.server_state) <= TOL


# --------------------------------------------------------------------------- a task with dropout
class _DropoutNet(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(5, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 2 * k)
        )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        z = self.net(x)
        return {"z_hat": z + 0.1 * torch.randn(z.shape, generator=generator)}


class _DropoutClient(ClientTask):
    def __init__(self, pid: int, k: int) -> None:
        self.role = f"vec{pid}"
        torch.manual_seed(100 + pid)
        self.model = _DropoutNet(k)
        self.data = torch.randn(60, 5, generator=torch.Generator().manual_seed(pid))

    def inputs(self, batch: BatchPlan, train: bool) -> tuple[torch.Tensor, ...]:
        x = self.data[batch.ids]
        if train:
            x = x + 0.05 * torch.randn(
                x.shape, generator=torch.Generator().manual_seed(batch.aug_seed)
            )
        return (x,)

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


class _DropoutServer(ServerTask):
    def __init__(self, k: int) -> None:
        self.num_clients = 2
        self.labels = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(9))
        self.train_ids, self.test_ids = torch.arange(40), torch.arange(40, 60)
        torch.manual_seed(7)
        self.model = nn.Sequential(nn.Linear(4 * k, 8), nn.Dropout(0.2), nn.Linear(8, 3))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.5)

    def loss(
        self, uplinks: Sequence[Mapping[str, torch.Tensor]], batch: BatchPlan
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.model(torch.cat([u["z_hat"] for u in uplinks], 1))
        y = self.labels[batch.ids]
        loss = F.cross_entropy(logits, y)
        n = float(y.shape[0])
        return loss, {
            "n": n,
            "loss_sum": float(loss.detach()) * n,
            "correct": float((logits.argmax(1) == y).sum()),
        }


def _dropout_factory(context: Context, params: Mapping[str, Any]) -> ClientTask:
    return _DropoutClient(int(context.node_config["partition-id"]), int(params["k"]))


def test_a_plugged_in_task_with_dropout_is_reproduced_exactly() -> None:
    """A user's own task pair on a user's own ClientApp (add_split_client), with a typed
    task parameter ``k`` sent in every message."""
    overrides = f"{TINY} strategy.steps_per_message=2"
    cfg = compose_config("split_supervised", overrides)
    app = add_split_client(ClientApp(), {"test_dropout": _dropout_factory})
    nodes = [{"partition-id": i, "num-partitions": 2} for i in range(2)]
    grid = InProcessGrid(app, nodes)
    strategy = SplitTraining(
        _DropoutServer(4), client_task="test_dropout", task_params={"k": 4}, **split_kwargs(cfg)
    )
    strategy.start(grid)
    clients = strategy.fetch_client_states(grid)
    ref = _reference(
        cfg, _DropoutServer(4), [_DropoutClient(i, 4) for i in range(2)], recompute=False
    )
    for p in (0, 1):
        assert _max_diff(clients[p], ref.client_states[p]) <= TOL
    assert _max_diff(server_state(strategy), ref.server_state) <= TOL


# --------------------------------------------------------------------------- simulation engine
def _simulate(
    overrides: str, flower_feeder: bool = False
) -> tuple[dict[int, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from flwr_semcom.runtime.simfeed import install_fast_feeder, restore_flower_feeder

    if flower_feeder:  # Flower's 0.1 s message feeder, else the adaptive one (runtime/simfeed.py)
        restore_flower_feeder()
    else:
        assert install_fast_feeder()

    out: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = _strategy(compose_config("split_supervised", overrides))
        strategy.start(grid)
        out["clients"] = strategy.fetch_client_states(grid)
        out["server"] = server_state(strategy)

    run_simulation(
        server_app=server_app,
        client_app=bundled_client_app({"experiment": "split_supervised", "overrides": overrides}),
        num_supernodes=2,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    if "clients" not in out:
        raise RuntimeError("the simulation did not finish (see the log above)")
    return out["clients"], out["server"]


@pytest.mark.slow
@pytest.mark.parametrize(("steps", "flower_feeder"), [(1, False), (4, False), (1, True)])
def test_simulation_engine_run_equals_reference(steps: int, flower_feeder: bool) -> None:
    overrides = f"{TINY} strategy.steps_per_message={steps}"
    clients, server = _simulate(overrides, flower_feeder)
    ref = _reference(compose_config("split_supervised", overrides))
    for p in (0, 1):
        assert _max_diff(clients[p], ref.client_states[p]) <= TOL
    assert _max_diff(server, ref.server_state) <= TOL


def test_scheduled_lr_hand_values() -> None:
    cfg = compose_config(
        "split_supervised",
        "strategy.lr=0.1 strategy.rounds=4 strategy.lr_schedule=cosine strategy.lr_min=0.02",
    )
    # lr_min + (lr - lr_min) (1 + cos(pi (r - 1) / 4)) / 2
    expected = [0.1, 0.02 + 0.08 * (1 + 2**-0.5) / 2, 0.06, 0.02 + 0.08 * (1 - 2**-0.5) / 2]
    got = [scheduled_lr(cfg.strategy, r) for r in (1, 2, 3, 4)]
    assert got == pytest.approx(expected, abs=1e-12)
    constant = compose_config("split_supervised", "strategy.lr=0.1 strategy.rounds=4")
    assert [scheduled_lr(constant.strategy, r) for r in (1, 4)] == [0.1, 0.1]
