"""The main job's compute floor here: what a run with free messaging would take (issue #19).

Runs a paper-1 experiment (default: the README's main job) in this process, on an in-process
grid that handles and times every client message when it is pushed, and splits the run into
its stages (``<method>/stage1``, ``<method>/stage2``; ``setup`` before the first, ``other``
after each Stage II: the results files, figures). Messages
pushed between two pulls form one *group*: the simulation runs them in parallel, one node per
core. The floor of a stage is

    server time (the stage's wall time minus the time spent in client handlers)
    + Σ over groups of max(largest per-node time, Σ node times / cores)

i.e. the run with zero dispatch, serialisation and wake-up cost, every node's compute
unchanged, the server step serial (the clients wait for it in the simulation too). Each
client here computes alone on an idle core (no neighbour sharing caches or memory
bandwidth), so the floor is, if anything, low.

The run is the same computation as ``semcom-run`` (same runner, same client handlers): with
``--compare SUMMARY`` every non-time field of its ``summary.json`` is checked against a
simulation run's, and a difference is listed (and fails the benchmark, exit 1).

The floor assumes two nodes on two cores run as fast as one node alone. ``--pair-repeats N``
checks that on this machine: one local Stage I pass of each modality (the main job's SimCLR
pass, 1 torch thread, its own process), alone and both at once, interleaved, N repeats;
``pair.slowdown_beside_other`` is the median (min, max) of (pass time beside the other) /
(pass time alone).

Usage::

    python benchmarks/main_floor.py --out benchmarks/results/main_floor.json \\
        --compare outputs/main/<stamp>/summary.json --pair-repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flwr.app import Message  # noqa: E402

from benchmarks._split_probes import summarize  # noqa: E402
from flwr_semcom.accounting import atomic_write  # noqa: E402
from flwr_semcom.client_app import app as client_app  # noqa: E402
from flwr_semcom.config import compose_config, split_overrides  # noqa: E402
from flwr_semcom.inprocess import InProcessGrid  # noqa: E402
from flwr_semcom.results import WALL_FIELDS  # noqa: E402
from simulations.experiments import _paper1_stages  # noqa: E402
from simulations.preflight import nodes_needed  # noqa: E402
from simulations.server_app import load_runner  # noqa: E402


class TimedGrid(InProcessGrid):
    """An :class:`InProcessGrid` that times each client handler and groups parallel pushes.

    Parameters
    ----------
    cores
        Cores the simulation spreads a group's nodes over.
    clock
        Seconds, monotonic (tests pass a fake one).
    *args, **kwargs
        As :class:`InProcessGrid`.
    """

    def __init__(
        self,
        *args: Any,
        cores: int,
        clock: Callable[[], float] = time.perf_counter,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.cores = cores
        self.clock = clock
        self.stage = "setup"
        self.stages: dict[str, dict[str, Any]] = {}
        self._stage_t0 = clock()
        self._group: dict[int, float] = defaultdict(float)
        self.enter_stage("setup")

    def enter_stage(self, stage: str) -> None:
        """Close the running stage (and group) and start timing ``stage``."""
        now = self.clock()
        self._close_group()
        if self.stage in self.stages:
            self.stages[self.stage]["wall_s"] += now - self._stage_t0
        self.stage, self._stage_t0 = stage, now
        self.stages.setdefault(
            stage,
            {"wall_s": 0.0, "client_s": 0.0, "critical_s": 0.0, "groups": 0, "messages": 0},
        )

    def finish(self) -> None:
        """Close the last stage (call once, after the runner returns)."""
        self.enter_stage("_end")
        del self.stages["_end"]

    def _close_group(self) -> None:
        if not self._group:
            return
        times = list(self._group.values())
        s = self.stages[self.stage]
        s["critical_s"] += max(max(times), sum(times) / self.cores)
        s["groups"] += 1
        self._group = defaultdict(float)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids: list[str] = []
        for msg in messages:
            t0 = self.clock()
            ids += super().push_messages([msg])
            dt = self.clock() - t0
            self._group[msg.metadata.dst_node_id] += dt
            s = self.stages[self.stage]
            s["client_s"] += dt
            s["messages"] += 1
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(super().pull_messages(message_ids))
        if replies:
            self._close_group()
        return replies

    def report(self) -> dict[str, Any]:
        """Per stage: wall, client, server and floor seconds; totals under ``total``."""
        out: dict[str, Any] = {}
        keys = ("wall_s", "client_s", "server_s", "floor_s", "groups", "messages")
        total = dict.fromkeys(keys, 0.0)
        for name, s in self.stages.items():
            server = s["wall_s"] - s["client_s"]
            row = {
                "wall_s": s["wall_s"],
                "client_s": s["client_s"],
                "server_s": server,
                "floor_s": server + s["critical_s"],
                "groups": s["groups"],
                "messages": s["messages"],
            }
            for k in keys:
                total[k] += row[k]
            out[name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
        total["groups"], total["messages"] = int(total["groups"]), int(total["messages"])
        out["total"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in total.items()}
        return out


def _label_stages(grid: TimedGrid) -> Callable[[], None]:
    """Wrap ``Paper1Run.run_stage1`` / ``run_stage2`` so the grid knows the stage; returns the
    undo."""
    cls = _paper1_stages.Paper1Run
    stage1, stage2 = cls.run_stage1, cls.run_stage2

    def run_stage1(self: Any, method: str) -> bool:
        grid.enter_stage(f"{method}/stage1")
        return stage1(self, method)

    def run_stage2(self: Any, method: str) -> None:
        grid.enter_stage(f"{method}/stage2")
        stage2(self, method)
        grid.enter_stage("other")

    cls.run_stage1 = run_stage1  # type: ignore[method-assign]
    cls.run_stage2 = run_stage2  # type: ignore[method-assign]

    def undo() -> None:
        cls.run_stage1 = stage1  # type: ignore[method-assign]
        cls.run_stage2 = stage2  # type: ignore[method-assign]

    return undo


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two summaries differ, :data:`~flwr_semcom.results.WALL_FIELDS` keys skipped at
    any depth."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            if k in WALL_FIELDS:
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k} (only in {'simulation' if k in b else 'in-process'})")
            else:
                out += differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path} (lengths {len(a)} / {len(b)})"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} / {b!r}"]


def count_fields(value: Any) -> int:
    """Leaf values of a summary, :data:`~flwr_semcom.results.WALL_FIELDS` keys skipped."""
    if isinstance(value, dict):
        return sum(count_fields(v) for k, v in value.items() if k not in WALL_FIELDS)
    if isinstance(value, list):
        return sum(count_fields(v) for v in value)
    return 1


def run(experiment: str, overrides: list[str], out_dir: Path, cores: int) -> tuple[Any, Any]:
    """One in-process run; its report and summary."""
    over = [*overrides, f"paths.output_dir={out_dir}"]
    cfg = compose_config(experiment, over)
    n = nodes_needed(cfg)
    nodes = [{"partition-id": i, "num-partitions": n} for i in range(n)]
    run_config = {"experiment": experiment, "overrides": " ".join(over)}
    grid = TimedGrid(client_app, nodes, run_config, cores=cores)
    undo = _label_stages(grid)
    try:
        runner = load_runner(str(cfg.experiment.runner))
        summary = runner(grid, cfg, grid.server_context())
    finally:
        undo()
    grid.finish()
    return grid.report(), summary


def _one_pass(modality: str, method: str, overrides: list[str], start: Any) -> float:
    """Seconds of one local Stage I pass of ``modality`` (round 0, shard 0, 1 thread), timed
    after ``start`` (a barrier) releases; runs in its own process."""
    import torch

    from flwr_semcom.paper1.data import stage_ids
    from flwr_semcom.paper1.models import build_ssl_transmitter, make_pretrain_sgd
    from flwr_semcom.paper1.pretrain import ssl_pass
    from flwr_semcom.paper1.rgbd import load_modality
    from flwr_semcom.paper1.settings import ssl_settings

    torch.set_num_threads(1)
    cfg = compose_config("main", [*overrides, f"pretrain.method={method}"])
    settings = ssl_settings(cfg)
    model = build_ssl_transmitter(settings, modality)
    opt = make_pretrain_sgd(model.parameters(), settings)
    ids = stage_ids(cfg).shards[0]
    data = {modality: load_modality(cfg, modality)}
    ssl_pass(
        {modality: model},
        data,
        ids[:128],
        settings,
        method=method,
        round_=99,
        optimizer=opt,
        stage_name="pretrain-local",
    )  # warm-up: allocator, kernels
    start.wait()
    t0 = time.perf_counter()
    ssl_pass(
        {modality: model},
        data,
        ids,
        settings,
        method=method,
        round_=0,
        optimizer=opt,
        stage_name="pretrain-local",
    )
    return time.perf_counter() - t0


def pair_check(
    repeats: int, method: str = "simclr", overrides: list[str] | None = None
) -> dict[str, Any]:
    """One local Stage I pass per modality alone and both at once, interleaved (the order
    reversed every other repeat); the per-pass times and the median slowdown beside the other."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    over = list(overrides or [])
    runs: list[dict[str, Any]] = []
    for r in range(repeats):
        kinds = ["rgb", "depth", "both"]
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            mods = ["rgb", "depth"] if kind == "both" else [kind]
            with ctx.Manager() as manager:
                start = manager.Barrier(len(mods))
                with ProcessPoolExecutor(len(mods), mp_context=ctx) as pool:
                    futures = [pool.submit(_one_pass, m, method, over, start) for m in mods]
                    times = [f.result() for f in futures]
            runs.append(
                {
                    "repeat": r,
                    "kind": kind,
                    "pass_s": dict(zip(mods, times, strict=True)),
                    "loadavg": [round(x, 2) for x in os.getloadavg()],
                }
            )
    ratios = []
    for r in range(repeats):
        mine = [x for x in runs if x["repeat"] == r]
        both = next(x for x in mine if x["kind"] == "both")["pass_s"]
        for m in ("rgb", "depth"):
            alone = next(x for x in mine if x["kind"] == m)["pass_s"][m]
            ratios.append(both[m] / alone)
    return {
        "method": method,
        "repeats": repeats,
        "runs": runs,
        "slowdown_beside_other": summarize(ratios),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--experiment",
        default="main",
        help="a paper-1 experiment (main, multimodal, …): stages are labelled through its runner",
    )
    p.add_argument("--overrides", default="", help="hydra overrides, space-separated")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--compare", type=Path, default=None, help="a simulation run's summary.json")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--command", default="", help="how --compare's run was made (stored)")
    p.add_argument("--pair-repeats", type=int, default=0, help="also run the pair check (0 = skip)")
    p.add_argument("--pair-only", action="store_true", help="only the pair check")
    args = p.parse_args(argv)
    if args.cores < 1:
        p.error(f"--cores must be an integer >= 1, got {args.cores}")
    if args.pair_repeats < 0 or (args.pair_only and args.pair_repeats < 1):
        p.error(
            f"--pair-repeats must be an integer >= 1 with --pair-only, >= 0 else, got "
            f"{args.pair_repeats}"
        )
    if args.pair_only:
        pair = pair_check(args.pair_repeats, overrides=split_overrides(args.overrides))
        print(json.dumps(pair, indent=1))
        if args.out is not None:
            data = json.loads(args.out.read_text()) if args.out.exists() else {}
            data["pair"] = {**pair, "argv": sys.argv}
            with atomic_write(args.out) as fh:
                json.dump(data, fh, indent=1)
            print(f"wrote {args.out} [pair]")
        return 0
    reference = json.loads(args.compare.read_text()) if args.compare else None
    load_before = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report, summary = run(
            args.experiment, split_overrides(args.overrides), Path(tmp), args.cores
        )
    result: dict[str, Any] = {
        "argv": sys.argv,
        "experiment": args.experiment,
        "overrides": args.overrides,
        "cores": args.cores,
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "command_wall_s": round(time.perf_counter() - t0, 1),
        "stages": report,
    }
    if reference is not None:
        diffs = differences(summary, reference)
        result["compare"] = {
            "summary": str(args.compare),
            "command": args.command,
            "fields_compared": count_fields(reference),
            "differences": diffs,
            "simulation_stage_s": {
                f"{info.get('method', label)}/stage{i}": info.get(f"stage{i}_time_s")
                for label, info in reference.get("methods", {}).items()
                for i in (1, 2)
            },
            "simulation_wall_time_s": reference.get("wall_time_s"),
        }
    if args.pair_repeats:
        result["pair"] = pair_check(args.pair_repeats, overrides=split_overrides(args.overrides))
    print(json.dumps(result, indent=1))
    if args.out is not None:
        with atomic_write(args.out) as fh:
            json.dump(result, fh, indent=1)
        print(f"wrote {args.out}")
    return 1 if reference is not None and result["compare"]["differences"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
