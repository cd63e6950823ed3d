"""Probes of :mod:`benchmarks.split_overhead`: where a split-learning exchange spends its time.

- :class:`TimedApp` wraps the ClientApp: every reply carries a ``bench`` record with the wall
  clock (``time.time()``, one clock for all processes of this machine) when the handler was
  entered and left, the process ID and the torch / OpenMP thread counts of the process that
  ran it.
- :class:`TimedGrid` wraps the ServerApp's grid: the time each message was pushed and each
  reply first pulled, and how many pulls the server made and how long they took.
- :func:`exchange_profile` joins the two: per training exchange, Flower's dispatch (push →
  handler entered: engine feeder tick, Ray submit, the ``Context`` shipped to the actor),
  the handler (state load, compute, save), the return (handler left → reply pulled: the
  ``Context`` shipped back, reply stored, the server's pull) and the server step.
- :func:`parallel_reference` runs the same training pass as the Flower run without Flower:
  each client in its own process (the two clients really run at the same time, on the same
  cores as the simulation's actors), models kept warm in the process, the server in this
  process, tensors through pipes; the clients compute with the very functions the Flower
  client uses (:func:`flwr_semcom.split.compute.forward_batches` and
  :func:`~flwr_semcom.split.compute.apply_gradients`). Its epoch time is what a Flower run
  with free messaging would take on this machine.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Iterable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import torch
from flwr.app import Context, Message, MetricRecord
from flwr.clientapp import ClientApp

__all__ = ["TimedApp", "TimedGrid", "exchange_profile", "parallel_reference", "summarize"]

TRAIN_TYPE = "train.split_step"


class TimedApp(ClientApp):
    """A ClientApp that runs ``inner`` and stamps its replies (record ``bench``)."""

    def __init__(self, inner: ClientApp) -> None:
        super().__init__()
        self._inner = inner

    def __call__(self, message: Message, context: Context) -> Message:
        t_enter = time.time()
        reply = self._inner(message, context)
        if not reply.has_error():
            reply.content["bench"] = MetricRecord(
                {
                    "t_enter": t_enter,
                    "t_exit": time.time(),
                    "pid": os.getpid(),
                    "torch_threads": torch.get_num_threads(),
                    "torch_interop_threads": torch.get_num_interop_threads(),
                    "omp_num_threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
                }
            )
        return reply


class TimedGrid:
    """Delegates to a Flower grid; stamps pushes and first pulls of replies."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.pushes: list[tuple[float, list[str], list[str]]] = []  # time, ids, message types
        self.seen: dict[str, tuple[float, Message]] = {}  # reply_to id → first pull, reply
        self.pull_calls = 0
        self.pull_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        msgs = list(messages)
        t = time.time()
        ids = list(self._grid.push_messages(msgs))
        self.pushes.append((t, ids, [m.metadata.message_type for m in msgs]))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        t0 = time.perf_counter()
        replies = list(self._grid.pull_messages(message_ids))
        self.pull_s += time.perf_counter() - t0
        self.pull_calls += 1
        t = time.time()
        for r in replies:
            self.seen.setdefault(r.metadata.reply_to_message_id, (t, r))
        return replies


def _rec(reply: Message, name: str) -> dict[str, float]:
    if name not in reply.content:
        return {}
    return {k: float(v) for k, v in reply.content.metric_records[name].items()}  # type: ignore[arg-type]


def exchange_profile(grid: TimedGrid) -> dict[str, Any]:
    """Per training exchange: dispatch, handler (load / compute / save), return, wait and the
    server's time before the next push, from the stamps of :class:`TimedApp` and ``grid``."""
    train = [(t, ids) for t, ids, types in grid.pushes if types and types[0] == TRAIN_TYPE]
    rows: list[dict[str, float]] = []
    pids: set[tuple[int, int, int, int]] = set()
    for j, (t_push, ids) in enumerate(train):
        got = [grid.seen[i] for i in ids if i in grid.seen]
        if len(got) != len(ids):
            continue
        per = []
        for t_seen, reply in got:
            b, timing = _rec(reply, "bench"), _rec(reply, "timing")
            if not b:
                continue
            pids.add(
                (
                    int(b["pid"]),
                    int(b["torch_threads"]),
                    int(b["torch_interop_threads"]),
                    int(b["omp_num_threads"]),
                )
            )
            per.append(
                {
                    "dispatch_s": b["t_enter"] - t_push,
                    "handler_s": b["t_exit"] - b["t_enter"],
                    "return_s": t_seen - b["t_exit"],
                    "load_s": timing.get("load_s", 0.0),
                    "compute_s": timing.get("compute_s", 0.0),
                    "save_s": timing.get("save_s", 0.0),
                    "seen": t_seen,
                }
            )
        if not per:
            continue
        last = max(p["seen"] for p in per)
        nxt = train[j + 1][0] if j + 1 < len(train) else last
        row = {k: max(p[k] for p in per) for k in per[0] if k != "seen"}
        row.update(
            exchange=float(j),
            wait_s=last - t_push,
            server_s=max(nxt - last, 0.0),
            # the slowest client's time outside its handler: what Flower adds to this exchange
            flower_s=(last - t_push) - max(p["handler_s"] for p in per),
            # the slowest handler's time outside load / compute / save (handler framing)
            framing_s=max(p["handler_s"] - p["load_s"] - p["compute_s"] - p["save_s"] for p in per),
        )
        rows.append(row)
    keys = [k for k in (rows[0] if rows else {}) if k != "exchange"]
    return {
        "exchanges": rows,
        "sum": {k: sum(r[k] for r in rows) for k in keys},
        "median": {k: statistics.median(r[k] for r in rows) for k in keys} if rows else {},
        "client_processes": [
            {"pid": p, "torch_threads": t, "torch_interop_threads": i, "OMP_NUM_THREADS": o}
            for p, t, i, o in sorted(pids)
        ],
        "server_pulls": grid.pull_calls,
        "server_pull_cpu_s": grid.pull_s,
    }


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


# ---------------------------------------------------------------------- parallel reference
def _client_worker(conn: Connection, overrides: str, partition: int) -> None:
    from flwr_semcom.config import compose_config
    from flwr_semcom.paper1.stage2 import supervised_device
    from flwr_semcom.split.compute import apply_gradients, forward_batches

    cfg = compose_config("split_supervised", overrides)
    torch.set_num_threads(int(cfg.num_threads))
    task = supervised_device(cfg, partition)
    device = next((p.device for p in task.model.parameters()), torch.device("cpu"))
    opt = task.make_optimizer(task.model.parameters())
    pending: tuple[Any, dict[str, torch.Tensor]] | None = None
    conn.send(("ready", torch.get_num_threads()))
    while True:
        cmd = conn.recv()
        if cmd is None:
            break
        round_, grads, plan = cmd
        t0 = time.perf_counter()
        if grads is not None:
            assert pending is not None
            lr = task.round_lr(round_)
            if lr is not None:
                for g in opt.param_groups:
                    g["lr"] = lr
            apply_gradients(task, opt, pending[0], grads, pending[1], device)
        ups = None
        if plan is not None:
            before = {k: v.detach().clone() for k, v in task.model.named_buffers()}
            ups = forward_batches(task, plan, True, device)
            pending = (plan, before)
        conn.send((ups, time.perf_counter() - t0))
    conn.close()


def parallel_reference(overrides: str, *, round_: int = 1) -> dict[str, Any]:
    """One training pass with each client in its own process (see the module docstring)."""
    from flwr_semcom.config import compose_config
    from flwr_semcom.paper1.stage2 import supervised_server
    from flwr_semcom.split import split_kwargs
    from flwr_semcom.split.schedule import client_plans, derive_seed, group, train_batches

    cfg = compose_config("split_supervised", overrides)
    k = split_kwargs(cfg)
    torch.set_num_threads(int(cfg.num_threads))
    server = supervised_server(cfg)
    n, seed, stage = server.num_clients, k["seed"], "finetune"
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for p in range(n):
        here, there = ctx.Pipe()
        proc = ctx.Process(target=_client_worker, args=(there, overrides, p), daemon=True)
        proc.start()
        pipes.append(here)
        procs.append(proc)
    threads = [pipe.recv()[1] for pipe in pipes]
    try:
        batches = train_batches(
            server.train_ids, k["batch_size"], seed=seed, round_=round_, stage=stage,
            drop_last=k["drop_last"],
        )  # fmt: skip
        groups = group(batches, k["steps_per_message"])
        plans = [
            group(client_plans(batches, c, seed=seed, stage=stage, round_=round_),
                  k["steps_per_message"])
            for c in range(n)
        ]  # fmt: skip
        server.start_round(round_)
        grads: list[list[dict[str, torch.Tensor]]] | None = None
        sums = {"n": 0.0, "loss_sum": 0.0, "correct": 0.0}
        compute = server_s = 0.0
        t0 = time.perf_counter()
        for j in range(len(groups) + 1):
            for c in range(n):
                plan = plans[c][j] if j < len(groups) else None
                pipes[c].send((round_, None if grads is None else grads[c], plan))
            replies = [pipe.recv() for pipe in pipes]
            compute += max(r[1] for r in replies)
            if j == len(groups):
                break
            ts = time.perf_counter()
            grads = [[] for _ in range(n)]
            for t, batch in enumerate(groups[j]):
                torch.manual_seed(derive_seed(seed, "server", stage, round_, batch.index))
                step = server.train_step([replies[c][0][t] for c in range(n)], batch)
                for c in range(n):
                    grads[c].append({k2: v.detach() for k2, v in step.grads[c].items()})
                for key in sums:
                    sums[key] += float(step.stats.get(key, 0.0))
            server_s += time.perf_counter() - ts
        epoch = time.perf_counter() - t0
    finally:
        for pipe in pipes:
            pipe.send(None)
        for proc in procs:
            proc.join(timeout=30)
    cnt = max(sums["n"], 1.0)
    return {
        "epoch_s": epoch,
        "client_compute_s": compute,
        "server_s": server_s,
        "transport_s": epoch - compute - server_s,
        "exchanges": len(groups) + 1,
        "loss": sums["loss_sum"] / cnt,
        "train_accuracy": sums["correct"] / cnt,
        "client_torch_threads": threads,
    }
