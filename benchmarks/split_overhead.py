"""Overhead of split learning on Flower's simulation engine vs the in-process reference.

For S (``strategy.steps_per_message``) in ``--steps``: one epoch of paper 1 Stage II (batch
64, 32 px synthetic RGB-D, ResNet-18 encoders, two modality clients), measured ``--repeats``
times (default 3), the kinds of run interleaved within each repeat (the order reversed every
other repeat, so that a drift of the machine's load hits every kind alike):

- ``reference``: the in-process reference (:func:`flwr_semcom.split.reference.run_reference`,
  one process, the clients one after the other). ``critical_path_s`` is its own estimate of
  a parallel run: Σ over groups of the slowest client's forward + server steps + the slowest
  client's update, each client timed while it ran *alone* in the process (the other core
  idle, or busy with other jobs);
- ``parallel``: the same pass with the two clients really in parallel, each in its own
  process on the machine's two cores, with the Flower client's compute functions, models
  kept in the processes and tensors through pipes (``_split_probes.parallel_reference``):
  what a Flower run with free messaging would take here;
- ``sim`` (and one ``sim_<variant>`` per ``--variants`` entry): ``flwr.simulation.run_simulation``
  with two SuperNodes (``client_resources num_cpus=1``: both clients in parallel) and
  :class:`strategies.split_training.SplitTraining`.

Reported per S: every time and ratio of each repeat, and their median / min / max
(``spread``). The flat keys are medians: ``ratio`` = sim / reference epoch,
``ratio_vs_critical_path`` = sim epoch / reference critical path, ``ratio_vs_parallel`` =
sim epoch / parallel epoch (what Flower costs over the same work run in parallel on the
same cores), ``ratio_parallel_vs_critical_path`` = parallel epoch / critical path (what
running the two clients at once on two cores costs, nothing of Flower in it), and the
simulation's ``profile``: epoch, clients' load / compute / save (Σ over exchanges of the
slowest client), server steps, ``messaging_overhead_s`` = epoch − those, and per exchange,
plus a per-exchange profile from stamps (``exchange_profile``: dispatch = push → handler
entered, return = handler left → reply pulled, server step; ``client_processes`` gives the
torch / OpenMP threads of the actors). Each run records ``os.getloadavg()`` before and after.
``--variants warm cold`` adds simulations with run config ``warm-clients`` set, ``--kinds``
runs a subset, ``--append`` adds repeats to the runs already in ``--out``. docs/performance.md
reads the results.

``--accuracy`` runs the accuracy-cost study instead: the reference (equal to the Flower run,
tests/test_split_equivalence.py) with the default small CNN for several rounds per S.

Usage::

    python benchmarks/split_overhead.py                 # 640 training samples, S = 1, 3 repeats
    python benchmarks/split_overhead.py --quick         # a smoke run (256 training samples)
    python benchmarks/split_overhead.py --steps 1 4 16 --repeats 5
    python benchmarks/split_overhead.py --accuracy --rounds 6 --steps 1 2 4 8 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import torch  # noqa: E402

from flwr_semcom.accounting import atomic_write  # noqa: E402
from flwr_semcom.config import compose_config  # noqa: E402
from simulations.experiments.split_supervised import reference  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

#: Simulation variants (``--variants``): name → run-config entries given to the ClientApp
#: (``warm``: models stay in a per-node worker process between messages, docs/split.md
#: "Warm client state"; ``cold``: the state travels in ``context.state`` with every message).
#: ``flowerfeed``: Flower's own 0.1 s message feeder instead of the adaptive one
#: (:mod:`flwr_semcom.runtime.simfeed`), clients as in ``sim``.
VARIANTS: dict[str, dict[str, bool | float | int | str]] = {
    "warm": {"warm-clients": True},
    "cold": {"warm-clients": False},
    "flowerfeed": {},
}
#: Variants that keep Flower's simulation feeder; every other simulation uses the fast one.
FLOWER_FEEDER = frozenset({"flowerfeed"})


def overrides_for(args: argparse.Namespace, steps: int) -> str:
    samples = 320 if args.quick else args.samples
    return (
        f"model=resnet18 data.num_samples={samples} data.image_size=32 data.test_fraction=0.2 "
        f"strategy.batch_size=64 strategy.rounds=1 strategy.steps_per_message={steps} "
        f"strategy.profile=true num_threads={args.threads}"
    )


def simulate(
    overrides: str,
    *,
    run_config: dict[str, bool | float | int | str] | None = None,
    probe: bool = True,
    flower_feeder: bool = False,
) -> dict[str, Any]:
    """One simulation-engine run; returns the strategy's round row, start-up time and (with
    ``probe``) the per-exchange profile of :func:`_split_probes.exchange_profile`.
    ``flower_feeder``: Flower's 0.1 s message feeder instead of the adaptive one."""
    from _split_probes import TimedApp, TimedGrid, exchange_profile
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from flwr_semcom.accounting import CommLedger
    from flwr_semcom.client_app import make_app
    from flwr_semcom.runtime.simfeed import install_fast_feeder, restore_flower_feeder

    if flower_feeder:
        restore_flower_feeder()
    else:
        install_fast_feeder()
    from simulations.experiments.split_supervised import build_strategy

    client_app = make_app(
        {"experiment": "split_supervised", "overrides": overrides, **(run_config or {})}
    )
    if probe:
        client_app = TimedApp(client_app)

    out: dict[str, Any] = {}
    server_app = ServerApp()
    t_launch = time.perf_counter()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = compose_config("split_supervised", overrides)
        strategy = build_strategy(cfg, CommLedger())
        g: Any = TimedGrid(grid) if probe else grid
        t0 = time.perf_counter()
        strategy.discover(g)
        out["startup_s"] = t0 - t_launch
        out["discover_s"] = time.perf_counter() - t0
        strategy.start(g)
        out["row"] = strategy.history[-1]
        out["ledger"] = strategy.ledger.summary()
        out["server_torch_threads"] = torch.get_num_threads()
        if probe:
            out["exchange_profile"] = exchange_profile(g)

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=2,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    if "row" not in out:
        raise RuntimeError("the simulation run failed (see the log above)")
    out["total_s"] = time.perf_counter() - t_launch
    return out


def profile_of(row: dict[str, Any]) -> dict[str, float]:
    """Where the simulation's training pass went (seconds, and per exchange)."""
    ex = float(row["exchanges"])
    client = (
        row.get("client_load_s", 0.0)
        + row.get("client_compute_s", 0.0)
        + row.get("client_save_s", 0.0)
    )
    overhead = float(row["train_time_s"]) - client - float(row.get("server_s", 0.0))
    return {
        "exchanges": ex,
        "train_time_s": float(row["train_time_s"]),
        "client_load_s": float(row.get("client_load_s", 0.0)),
        "client_compute_s": float(row.get("client_compute_s", 0.0)),
        "client_save_s": float(row.get("client_save_s", 0.0)),
        "server_s": float(row.get("server_s", 0.0)),
        "wait_s": float(row.get("wait_s", 0.0)),
        "messaging_overhead_s": overhead,
        "overhead_per_exchange_s": overhead / ex if ex else 0.0,
    }


def _default_warm() -> bool | None:
    """Whether a simulation's split clients are warm when the run config does not say."""
    try:
        from flwr_semcom.runtime import relay
    except ImportError:
        return None
    flag = getattr(relay, "DEFAULT_WARM_IN_SIMULATION", getattr(relay, "DEFAULT_WARM", None))
    env = os.environ.get(getattr(relay, "ENV_KEY", ""), "")
    return bool(flag) if not env else env.strip().lower() in ("1", "true", "yes", "on")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_kind(kind: str, args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """One run of ``kind`` (``reference``, ``parallel``, ``sim`` or ``sim_<variant>``)."""
    ov = overrides_for(args, steps)
    rec: dict[str, Any] = {"kind": kind, "steps": steps, "load_before": _load()}
    t0 = time.perf_counter()
    if kind == "reference":
        row = reference(compose_config("split_supervised", ov), rounds=1).history[-1]
        rec.update(
            epoch_s=row["train_time_s"],
            critical_path_s=row["critical_path_s"],
            eval_s=row["eval_time_s"],
            test_accuracy=row["test_accuracy"],
            loss=row["loss"],
            torch_threads=torch.get_num_threads(),
        )
        if args.graph_reference and steps == 1:
            cfg = compose_config("split_supervised", ov)
            graph = reference(cfg, rounds=1, recompute=False, evaluate=False)
            rec["graph_epoch_s"] = graph.history[-1]["train_time_s"]
    elif kind == "parallel":
        from _split_probes import parallel_reference

        rec.update(parallel_reference(ov))
    else:
        variant = kind.partition("_")[2]
        sim = simulate(
            ov,
            run_config=VARIANTS[variant] if variant else None,
            flower_feeder=variant in FLOWER_FEEDER,
        )
        row = sim["row"]
        rec.update(
            epoch_s=row["train_time_s"],
            eval_s=row["eval_time_s"],
            startup_s=sim["startup_s"],
            discover_s=sim["discover_s"],
            total_s=sim["total_s"],
            test_accuracy=row["test_accuracy"],
            loss=row["loss"],
            server_torch_threads=sim["server_torch_threads"],
            profile=profile_of(row),
            exchange_profile=sim.get("exchange_profile"),
            ledger=sim["ledger"],
        )
    rec["wall_s"] = time.perf_counter() - t0
    rec["load_after"] = _load()
    print(
        f"[{kind} S={steps}] epoch {rec['epoch_s']:.1f} s "
        f"load {rec['load_before'][0]:.2f} -> {rec['load_after'][0]:.2f}",
        flush=True,
    )
    return rec


def spread(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Median / min / max / n of every numeric leaf present in all ``records`` (recursively
    through dicts; lists and strings are left out)."""
    from _split_probes import summarize

    out: dict[str, Any] = {}
    for key, first in records[0].items():
        vals = [r.get(key) for r in records]
        if isinstance(first, bool):
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[key] = summarize([float(v) for v in vals])  # type: ignore[arg-type]
        elif all(isinstance(v, dict) for v in vals):
            sub = spread(vals)  # type: ignore[arg-type]
            if sub:
                out[key] = sub
    return out


def medians(tree: dict[str, Any]) -> dict[str, Any]:
    """The medians of a :func:`spread` tree, in the same shape (other leaves left out)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and "median" in v:
            out[k] = v["median"]
        elif isinstance(v, dict):
            sub = medians(v)
            if sub:
                out[k] = sub
    return out


def _sim_view(
    sim: dict[str, Any], ref: dict[str, Any] | None, par: dict[str, Any] | None
) -> dict[str, Any]:
    """The numbers of one simulation run that are summarized across repeats."""
    view: dict[str, Any] = {
        k: sim[k] for k in ("epoch_s", "eval_s", "startup_s", "discover_s", "total_s", "wall_s")
    }
    view["test_accuracy"] = sim["test_accuracy"]
    view["loss"] = sim["loss"]
    view["profile"] = sim["profile"]
    ep = sim.get("exchange_profile") or {}
    if ep:
        view["exchange_profile"] = {"sum": ep["sum"], "median": ep["median"]}
        view["server_pulls"] = ep["server_pulls"]
        view["server_pull_cpu_s"] = ep["server_pull_cpu_s"]
    if ref is not None:
        view["ratio"] = sim["epoch_s"] / ref["epoch_s"]
        view["ratio_vs_critical_path"] = sim["epoch_s"] / ref["critical_path_s"]
    if par is not None:
        view["ratio_vs_parallel"] = sim["epoch_s"] / par["epoch_s"]
    return view


def summarize_s(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-S entry: spread of every kind across repeats, ratios paired within a repeat,
    and the flat median keys that README/docs quote."""
    by = {(r["repeat"], r["kind"]): r for r in runs}
    repeats = sorted({r["repeat"] for r in runs})
    kinds = sorted({r["kind"] for r in runs if r["kind"].startswith("sim")})
    entry: dict[str, Any] = {"repeats": len(repeats)}
    refs = [by[i, "reference"] for i in repeats if (i, "reference") in by]
    pars = [by[i, "parallel"] for i in repeats if (i, "parallel") in by]
    keep: tuple[str, ...]
    if refs:
        keep = ("epoch_s", "critical_path_s", "eval_s", "test_accuracy", "loss", "graph_epoch_s")
        entry["reference"] = spread([{k: r[k] for k in keep if k in r} for r in refs])
    if pars:
        keep = ("epoch_s", "client_compute_s", "server_s", "transport_s", "loss")
        entry["parallel"] = spread([{k: p[k] for k in keep} for p in pars])
    pairs = [
        {"ratio_parallel_vs_critical_path": by[i, "parallel"]["epoch_s"]
         / by[i, "reference"]["critical_path_s"]}
        for i in repeats if (i, "parallel") in by and (i, "reference") in by
    ]  # fmt: skip
    if pairs:
        entry.update(spread(pairs))
    for kind in kinds:
        views = [
            _sim_view(by[i, kind], by.get((i, "reference")), by.get((i, "parallel")))
            for i in repeats
            if (i, kind) in by
        ]
        entry[kind] = spread(views)
        first = next(by[i, kind] for i in repeats if (i, kind) in by)
        entry[kind]["client_processes"] = (first.get("exchange_profile") or {}).get(
            "client_processes"
        )
        entry[kind]["ledger"] = first["ledger"]
    # flat median keys (the names README / docs quote)
    m = medians({k: v for k, v in entry.items() if isinstance(v, dict)})
    flat: dict[str, Any] = {}
    if "reference" in m:
        r = m["reference"]
        flat.update(
            reference_epoch_s=r["epoch_s"],
            reference_critical_path_s=r["critical_path_s"],
            reference_eval_s=r["eval_s"],
            reference_test_accuracy=r["test_accuracy"],
        )
        if "graph_epoch_s" in r:
            flat["reference_graph_epoch_s"] = r["graph_epoch_s"]
    if "parallel" in m:
        flat["parallel_epoch_s"] = m["parallel"]["epoch_s"]
    if "sim" in m:
        s = m["sim"]
        flat.update(
            sim_epoch_s=s["epoch_s"],
            sim_eval_s=s["eval_s"],
            sim_startup_s=s["startup_s"],
            sim_discover_s=s["discover_s"],
            sim_total_s=s["total_s"],
            sim_test_accuracy=s["test_accuracy"],
            train_loss=s["loss"],
            profile=s["profile"],
        )
        for k in ("ratio", "ratio_vs_critical_path", "ratio_vs_parallel"):
            if k in s:
                flat[k] = s[k]
    return {**flat, **entry}


def _order(kinds: list[str], repeat: int) -> list[str]:
    return kinds if repeat % 2 == 0 else kinds[::-1]


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    sims = ["sim"] + [f"sim_{v}" for v in args.variants]
    kinds = ["reference", *sims[:1], "parallel", *sims[1:]]
    if args.kinds:
        kinds = [k for k in kinds if k in args.kinds]
    setup = {
        "encoder": "resnet18",
        "image_size": 32,
        "batch_size": 64,
        "clients": 2,
        "quick": bool(args.quick),
        "samples": 320 if args.quick else args.samples,
        "torch_threads_per_process": args.threads,
        "reference": "one process, clients sequential, forward replayed (recompute=True)",
        "parallel": "one process per client + the server's, pipes, models kept in the processes",
        "simulation": "run_simulation, 2 SuperNodes, client_resources num_cpus=1",
        "variants": {v: VARIANTS[v] for v in args.variants},
        "kinds_per_repeat": kinds,
        "order": "kinds_per_repeat in even repeats, reversed in odd repeats",
        "sim_warm_clients_by_default": _default_warm(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    out = args.out or RESULTS / (
        "split_overhead_quick.json" if args.quick else "split_overhead.json"
    )
    runs: list[dict[str, Any]] = []
    first = 0
    if args.append and out.exists():
        old = json.loads(out.read_text())
        if old.get("setup", {}).get("samples") != setup["samples"]:
            raise SystemExit(f"--append: {out} was measured with other settings")
        runs = old.get("runs", [])
        first = 1 + max((r["repeat"] for r in runs), default=-1)
        earlier = old.get("invocations", [old["setup"]])
    else:
        earlier = []
    report: dict[str, Any] = {"benchmark": "split_overhead", "setup": setup}
    report["setup"]["load_average_at_start"] = _load()
    report["setup"]["first_repeat"] = first
    report["invocations"] = [*earlier, setup]
    for i in range(first, first + args.repeats):
        for steps in args.steps:
            for kind in _order(kinds, i):
                rec = run_kind(kind, args, steps)
                rec["repeat"] = i
                runs.append(rec)
                with atomic_write(out.with_suffix(".partial.json")) as fh:
                    json.dump({"setup": setup, "runs": runs}, fh, indent=1)
    report["per_s"] = {}
    for steps in sorted({int(r["steps"]) for r in runs}):
        entry = summarize_s([r for r in runs if r["steps"] == steps])
        report["per_s"][str(steps)] = entry
        for key, src in (("ratio_sim_s{}", "ratio"), ("ratio_sim_s{}_vs_critical_path",
                         "ratio_vs_critical_path"), ("ratio_sim_s{}_vs_parallel",
                         "ratio_vs_parallel")):  # fmt: skip
            for kind in sims:
                tree = entry.get(kind, {}).get(src)
                if tree:
                    name = key.format(steps if kind == "sim" else f"{steps}_{kind[4:]}")
                    report[name] = tree["median"]
                    report[f"{name}_spread"] = [tree["min"], tree["max"]]
        for kind in sims:
            prof = entry.get(kind, {}).get("profile", {}).get("overhead_per_exchange_s")
            if prof:
                sfx = steps if kind == "sim" else f"{steps}_{kind[4:]}"
                report[f"overhead_per_exchange_s{sfx}"] = prof["median"]
                report[f"overhead_per_exchange_s{sfx}_spread"] = [prof["min"], prof["max"]]
        if "sim_test_accuracy" in entry:
            report[f"accuracy_s{steps}"] = entry["sim_test_accuracy"]
        if "ratio_parallel_vs_critical_path" in entry:
            tree = entry["ratio_parallel_vs_critical_path"]
            report[f"ratio_parallel_s{steps}_vs_critical_path"] = tree["median"]
    report["load_average_at_end"] = _load()
    report["runs"] = runs
    report["goals"] = {
        "ratio_sim_s1": 1.5,
        "ratio_sim_s16": 1.1,
        "ratio_sim_s1_vs_critical_path": 1.3,
        "overhead_per_exchange_s1": 0.15,
    }
    args.out = out
    return report


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"benchmark": "split_accuracy_vs_steps_per_message", "per_s": {}}
    for steps in args.steps:
        ov = f"strategy.rounds={args.rounds} strategy.steps_per_message={steps} {args.extra}"
        ref = reference(compose_config("split_supervised", ov))
        hist = [
            {k: row[k] for k in ("round", "loss", "train_accuracy", "test_accuracy")}
            for row in ref.history
        ]
        report["per_s"][str(steps)] = {
            "overrides": ov.strip(),
            "final_test_accuracy": hist[-1]["test_accuracy"],
            "best_test_accuracy": max(h["test_accuracy"] for h in hist),
            "final_train_loss": hist[-1]["loss"],
            "history": hist,
        }
        print(
            f"S={steps:3d}: final test acc {hist[-1]['test_accuracy']:.3f} "
            f"best {report['per_s'][str(steps)]['best_test_accuracy']:.3f} "
            f"final loss {hist[-1]['loss']:.3f}",
            flush=True,
        )
    return report


def latency(args: argparse.Namespace) -> dict[str, Any]:
    """Per-exchange latency with a tiny model (S = 1), ``--repeats`` times interleaved (order
    reversed every other repeat): the adaptive feeder at the 5 ms and 0.1 s server poll, and
    Flower's 0.1 s feeder at the 5 ms poll. Per configuration every run and the median / min /
    max of each figure (``per_config``); ``per_poll`` / ``flower_feeder`` hold the medians."""
    from _split_probes import summarize

    configs = {"fast_poll0.005": (0.005, False), "fast_poll0.1": (0.1, False)}
    configs["flower_poll0.005"] = (0.005, True)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    for r in range(args.repeats):
        order = list(configs) if r % 2 == 0 else list(reversed(configs))
        for name in order:
            poll, flower = configs[name]
            ov = (
                "data.num_samples=400 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
                f"strategy.batch_size=8 strategy.rounds=1 strategy.steps_per_message=1 "
                f"strategy.poll_interval={poll} strategy.profile=true"
            )
            load = _load()
            row = simulate(ov, flower_feeder=flower)["row"]
            prof = profile_of(row)
            client = prof["client_load_s"] + prof["client_compute_s"] + prof["client_save_s"]
            entry = {
                "exchanges": prof["exchanges"],
                "exchange_median_s": row["wait_median_s"],
                "exchange_mean_s": row["wait_s"] / prof["exchanges"],
                "client_time_per_exchange_s": client / prof["exchanges"],
                "overhead_per_exchange_s": (row["wait_s"] - client) / prof["exchanges"],
                "load_before": load[0],
            }
            runs[name].append(entry)
            vals = json.dumps({k: round(v, 4) for k, v in entry.items()})
            print(f"[latency {name} repeat {r}] {vals}", flush=True)
    per_config = {
        name: {
            "runs": rs,
            **{k: summarize([x[k] for x in rs]) for k in rs[0] if k != "load_before"},
        }
        for name, rs in runs.items()
    }
    med = {n: {k: v["median"] for k, v in c.items() if k != "runs"} for n, c in per_config.items()}
    return {
        "benchmark": "split_exchange_latency",
        "repeats": args.repeats,
        "per_config": per_config,
        "per_poll": {"0.005": med["fast_poll0.005"], "0.1": med["fast_poll0.1"]},
        "flower_feeder": {"poll_interval_s": 0.005, **med["flower_poll0.005"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on 256 training samples")
    parser.add_argument("--samples", type=int, default=800, help="scenes (80%% train), default 800")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="S values")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats, default 3")
    parser.add_argument(
        "--variants", nargs="*", default=[], choices=sorted(VARIANTS), help="simulation variants"
    )
    parser.add_argument(
        "--kinds", nargs="*", default=None, help="run only these kinds (e.g. sim_warm)"
    )
    parser.add_argument(
        "--append", action="store_true", help="add repeats to the runs already in --out"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument(
        "--graph-reference", action="store_true", help="also time graph-keeping reference"
    )
    parser.add_argument("--accuracy", action="store_true", help="accuracy-cost study instead")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of the accuracy study")
    parser.add_argument("--latency", action="store_true", help="per-exchange latency instead")
    parser.add_argument("--extra", default="", help="more hydra overrides for --accuracy")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = [1, 2, 4, 8, 16] if args.accuracy else [1]
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    os.environ.setdefault("RAY_TMPDIR", "/tmp/ray")
    t0 = time.perf_counter()
    if args.accuracy:
        report, default = accuracy(args), "split_accuracy_vs_s.json"
    elif args.latency:
        report, default = latency(args), "split_latency.json"
    else:
        report, default = overhead(args), ""
    report["benchmark_wall_s"] = time.perf_counter() - t0
    out = args.out or RESULTS / default
    with atomic_write(out) as fh:
        json.dump(report, fh, indent=1)
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    keys = ("ratio", "accuracy_s", "overhead_per")
    print(json.dumps({k: v for k, v in report.items() if k.startswith(keys)}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
