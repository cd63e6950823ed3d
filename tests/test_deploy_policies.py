"""Failure policies ``skip`` and ``wait`` on the loopback TLS deployment (issue #17, item 3).

A TLS + SuperNode-auth SuperLink and two SuperNodes on 127.0.0.1 (simulations.deploy_local)
run split_supervised (3 tiny rounds); once round 1 and its checkpoint are written, the depth
device's SuperNode and everything it started get SIGKILL (mid-run: round 2 starts right after
the checkpoint), and the same SuperNode is started again with the same partition, port and key
(simulations.deploy_control). The ``abort`` case is test_reliability_deploy.py.

- ``skip``: the run completes (exit 0, 3 rounds); rounds 2 and 3 name the depth device in
  ``skipped`` (``1:depth``: in round 3 the restarted device, without state, refuses instead
  of training on from its initial weights); round 1 equals an uninterrupted run's round 1.
- ``wait``: the run completes with the loss and accuracies of an uninterrupted run (the
  in-process run of the same config; the ``skip`` test checks round 1 of the deployment is
  bit-identical to it, as test_deployment.py does for simulation vs deployment): the server
  waits for the node, restores the device's state of the round start and re-sends
  (strategies/_split_recovery.py).

Afterwards no process of the deployment is left. Slow (``-m slow``). The same recoveries run
fast in process below (``_RestartingGrid``: restart at a round start, mid-round, during the
evaluation, with a new node ID, a node that never comes back).
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Context, Error, Message, RecordDict

from flwr_semcom.accounting import CommLedger
from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import compose_config
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.split.protocol import (
    EVAL_FORWARD,
    QUERY_CHECKPOINT,
    TRAIN_STEP,
    MessageSpec,
    encode_plan,
)
from simulations.deploy_control import kill_supernode, restart_supernode
from simulations.deploy_local import RunResult, local_deployment
from simulations.experiments.split_supervised import build_strategy
from simulations.experiments.split_supervised import run as run_split
from strategies._split_plan import plan_pass
from strategies.split_training import ClientTimeoutError

#: 38 training samples in 7 batches of 6, S = 8: two train.split_step messages per round
TINY_SPLIT = (
    "data.num_samples=48 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=6 strategy.eval_batch_size=16 strategy.steps_per_message=8 "
    "strategy.rounds=3 strategy.timeout=120"
)
#: metrics.csv columns a failure policy may not change (the ledger columns count re-sends)
LEARNING = ("round", "loss", "train_accuracy", "test_loss", "test_accuracy")


def _rows(folder: Path) -> list[dict[str, str]]:
    for path in folder.glob("split_supervised/*/metrics.csv"):
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    return []


def _reference(out: Path, policy: str) -> list[dict[str, str]]:
    """The uninterrupted run, in process (same config, same-length output path)."""
    over = f"{TINY_SPLIT} {policy} paths.output_dir={out}"
    cfg = compose_config("split_supervised", over)
    nodes = [{"partition-id": i, "num-partitions": 2} for i in (0, 1)]
    grid = InProcessGrid(client_app, nodes, {"experiment": "split_supervised", "overrides": over})
    run_split(grid, cfg, grid.server_context())
    return _rows(out)


def _kill_and_restart_mid_run(tmp_path: Path, policy: str) -> tuple[RunResult, Path, float]:
    """Run split_supervised under ``policy`` on a loopback deployment; kill SuperNode 1 once
    round 1 is checkpointed and start it again. Returns the result, the output folder and
    the seconds the SuperNode was down."""
    out = tmp_path / "dep"
    with local_deployment(2, tls=True, auth=True, workdir=tmp_path / "w") as dep:
        result: list[RunResult] = []
        runner = threading.Thread(
            target=lambda: result.append(
                dep.run_experiment(
                    "split_supervised",
                    f"{TINY_SPLIT} {policy} paths.output_dir={out}",
                    timeout=900,
                )
            ),
            daemon=True,
        )
        runner.start()
        deadline = time.monotonic() + 900
        while not any(out.glob("split_supervised/*/checkpoint.pt")) and runner.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert runner.is_alive(), "the run ended before round 1 was checkpointed"
        t0 = time.monotonic()
        kill_supernode(dep, 1)
        restart_supernode(dep, 1)
        down = time.monotonic() - t0
        runner.join(timeout=900)
        assert result, "the launcher did not return"
        time.sleep(0.5)
        dep.record_pids()
    time.sleep(0.5)
    assert dep.leftover_processes() == []
    return result[0], out, down


@pytest.mark.slow
def test_skip_completes_with_the_killed_device_marked(tmp_path: Path) -> None:
    policy = "reliability.on_failure=skip"
    res, out, down = _kill_and_restart_mid_run(tmp_path, policy)
    lines = [ln for ln in res.output.splitlines() if "reliability: " in ln]
    print(f"SuperNode down {down:.0f} s\n" + "\n".join(lines))  # -rP: what the operator sees
    assert res.returncode == 0 and res.status == "finished:completed", res.output[-3000:]
    assert any(
        "(partition 1, depth)" in ln and "round 2" in ln and "on_failure=skip" in ln for ln in lines
    ), res.output[-3000:]
    rows = _rows(out)
    assert [r["round"] for r in rows] == ["1", "2", "3"]
    assert [r["skipped"] for r in rows] == ["", "1:depth", "1:depth"]
    ref = _reference(tmp_path / "ref", policy)
    assert {k: rows[0][k] for k in LEARNING} == {k: ref[0][k] for k in LEARNING}


@pytest.mark.slow
def test_wait_rides_out_a_restarted_supernode_with_the_same_metrics(tmp_path: Path) -> None:
    policy = "reliability.on_failure=wait reliability.retries=3"
    res, out, down = _kill_and_restart_mid_run(tmp_path, policy)
    lines = [ln for ln in res.output.splitlines() if "reliability: " in ln]
    print(f"SuperNode down {down:.0f} s\n" + "\n".join(lines))
    assert res.returncode == 0 and res.status == "finished:completed", "\n".join(lines)
    assert any(
        "(partition 1, depth) holds exchange -1 of round 0" in ln
        and "restoring its state of the start of round 2" in ln
        for ln in lines
    ), "\n".join(lines)
    rows, ref = _rows(out), _reference(tmp_path / "ref", policy)
    assert [{k: r[k] for k in LEARNING} for r in rows] == [{k: r[k] for k in LEARNING} for r in ref]
    assert all(r.get("skipped", "") == "" for r in rows)


class _RestartingGrid(InProcessGrid):
    """In process, what a SuperNode killed and restarted does to the server: partition 1's node
    dies when it gets the message ``at`` = (type, round, exchange) (an error reply, as the
    SuperLink's "Node Unavailable"), is missing from ``get_node_ids`` for the next ``down``
    calls (messages to it get the same error; ``down=None``: forever), and comes back with an
    empty ``context.state``, as node ``new_id`` if given (a SuperNode with another key).
    ``later``: the first ``later`` such messages pass."""

    def __init__(
        self,
        *args: Any,
        at: tuple[str, int, int] = (TRAIN_STEP, 2, 0),
        down: int | None = 0,
        new_id: int | None = None,
        later: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.down, self.new_id, self.later = at, down, new_id, later
        self.dead: int | None = None
        self.fired = False

    def _revive(self) -> None:
        assert self.dead is not None
        old = self.contexts.pop(self.dead)
        node = self.new_id or self.dead
        self.contexts[node] = Context(
            old.run_id, node, old.node_config, RecordDict(), old.run_config
        )
        self.dead = None

    def get_node_ids(self) -> Iterable[int]:
        if self.dead is not None and (self.down is None or self.down > 0):
            self.down = None if self.down is None else self.down - 1
            return [n for n in self.contexts if n != self.dead]
        if self.dead is not None:
            self._revive()
        return list(self.contexts)

    def _dies(self, msg: Message) -> bool:
        ctx = self.contexts[msg.metadata.dst_node_id]
        kind = msg.metadata.message_type
        if self.fired or ctx.node_config["partition-id"] != 1 or kind != self.at[0]:
            return False
        spec = MessageSpec.from_message(msg, kind)
        if (spec.round, spec.exchange) != self.at[1:]:
            return False
        self.later -= 1
        if self.later >= 0:
            return False
        self.fired, self.dead = True, ctx.node_id
        if self.down == 0:
            self._revive()
        return True

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        out: list[str] = []
        for msg in messages:
            dst = msg.metadata.dst_node_id
            if dst in self.contexts and dst != self.dead and not self._dies(msg):
                out.extend(super().push_messages([msg]))
                continue
            msg_id = f"dead{len(self._replies)}-{time.monotonic_ns()}"
            msg.metadata.__dict__["_message_id"] = msg_id
            reply = Message(Error(code=5, reason="Node Unavailable (test)"), reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = dst
            self._replies[msg_id] = reply
            out.append(msg_id)
        return out


def _run_in_process(
    out: Path, policy: str, grid_kwargs: dict[str, Any] | None = None
) -> list[dict[str, str]]:
    over = f"{TINY_SPLIT} {policy} paths.output_dir={out}"
    cfg = compose_config("split_supervised", over)
    nodes = [{"partition-id": i, "num-partitions": 2} for i in (0, 1)]
    run_config = {"experiment": "split_supervised", "overrides": over}
    if grid_kwargs is None:
        grid: InProcessGrid = InProcessGrid(client_app, nodes, run_config)
    else:
        grid = _RestartingGrid(client_app, nodes, run_config, **grid_kwargs)
    run_split(grid, cfg, grid.server_context())
    return _rows(out)


def test_a_restarted_client_is_not_silently_reinitialised(tmp_path: Path) -> None:
    # fast, in process: the depth client "restarts" in round 2 under skip; in round 3 it must
    # not train on from its initial weights unnoticed: it refuses, and is skipped and marked
    rows = _run_in_process(tmp_path, "reliability.on_failure=skip", {})
    assert [r["skipped"] for r in rows] == ["", "1:depth", "1:depth"]


def test_a_client_without_state_refuses_a_later_round_unless_told_it_is_fresh(
    tmp_path: Path,
) -> None:
    over = f"{TINY_SPLIT} paths.output_dir={tmp_path}"
    nodes = [{"partition-id": i, "num-partitions": 2} for i in (0, 1)]
    grid = InProcessGrid(client_app, nodes, {"experiment": "split_supervised", "overrides": over})
    strategy = build_strategy(compose_config("split_supervised", over), CommLedger())
    strategy.discover(grid)
    s = strategy
    p = plan_pass(
        s.server.train_ids, batch_size=s.batch_size, steps_per_message=s.steps_per_message,
        seed=s.seed, round_=2, stage=s.stage, drop_last=s.drop_last, num_clients=2,
    )  # fmt: skip

    def step(**extra: Any) -> Message:
        config = s._config(2, exchange=0, **extra)
        content = RecordDict({"config": config, "plan": encode_plan(p.plans[1][0])})
        (reply,) = grid.send_and_receive([Message(content, 1001, TRAIN_STEP)])
        return reply

    refused = step()
    assert refused.has_error()
    assert (
        "got exchange 0 of round 2 but this client has no split state (the node restarted and "
        "lost it?); refused instead of training on from the initial weights"
        in str(refused.error.reason)
    )
    assert not step(fresh=True).has_error()  # a device the server never trained starts fresh
    assert not step().has_error()  # now it has state: exchange 0 of a round is accepted


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    return _run_in_process(tmp_path_factory.mktemp("ref"), "reliability.on_failure=wait")


@pytest.mark.parametrize(
    ("grid_kwargs", "expect"),
    [
        (
            {"at": (TRAIN_STEP, 2, 0)},
            "holds exchange -1 of round 0, expected exchange 1 of round 1; restoring its state "
            "of the start of round 2 and replaying 0 exchange(s)",
        ),
        (
            {"at": (TRAIN_STEP, 2, 1), "down": 2},
            "holds exchange -1 of round 0, expected exchange 0 of round 2; restoring its state "
            "of the start of round 2 and replaying 1 exchange(s)",
        ),
        (
            {"at": (EVAL_FORWARD, 3, 0), "new_id": 2001},
            "holds exchange -1 of round 0, expected exchange 1 of round 3; restoring its state "
            "of the start of round 3 and replaying 2 exchange(s)",
        ),
        (  # the checkpoint query after round 1 (the first one is at round 1's start)
            {"at": (QUERY_CHECKPOINT, 0, 0), "later": 1, "down": 1},
            "holds exchange -1 of round 0, expected exchange 1 of round 1; restoring its state "
            "of the start of round 1 and replaying 2 exchange(s)",
        ),
    ],
    ids=["round-start", "mid-round-down-2-polls", "evaluation-new-node-id", "checkpoint-query"],
)
def test_wait_restores_a_restarted_client_and_the_run_is_unchanged(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    uninterrupted: list[dict[str, str]],
    grid_kwargs: dict[str, Any],
    expect: str,
) -> None:
    # fast, in process: the same recovery as in the deployment test above
    with caplog.at_level(logging.INFO, logger="flwr"):
        rows = _run_in_process(tmp_path, "reliability.on_failure=wait reliability.retries=1",
                               grid_kwargs)  # fmt: skip
    lines = [m for m in caplog.messages if m.startswith("reliability: ")]
    assert any(expect in m for m in lines), lines
    if grid_kwargs["at"][0] != QUERY_CHECKPOINT:
        assert any("on_failure=wait: re-sending (attempt 1 of 1)" in m for m in lines)
    if grid_kwargs.get("down"):
        assert sum("reliability: waiting for client" in m for m in lines) == grid_kwargs["down"]
    if grid_kwargs.get("new_id"):
        assert any("(partition 1, depth) is back as node 2001" in m for m in lines)
    assert [{k: r[k] for k in LEARNING} for r in rows] == [
        {k: r[k] for k in LEARNING} for r in uninterrupted
    ]
    assert all(r.get("skipped", "") == "" for r in rows)


def test_wait_gives_up_when_the_node_does_not_come_back(tmp_path: Path) -> None:
    policy = "reliability.on_failure=wait reliability.retries=3 strategy.timeout=1"
    with pytest.raises(ClientTimeoutError) as err:
        _run_in_process(tmp_path, policy, {"down": None})
    assert str(err.value) == (
        "client node 1001 (partition 1, depth) not back within timeout=1 s after it failed "
        "(train.split_step, round 2, exchange 0): its node is not listed (offline); "
        "on_failure=wait: run aborted (completed rounds are kept)"
    )
    assert [r["round"] for r in _rows(tmp_path)] == ["1"]
