"""Overhead of split learning on Flower's simulation engine vs the in-process reference.

For S (``strategy.steps_per_message``) in {1, 4, 16}: one epoch of paper 1 Stage II (batch 64,
32 px synthetic RGB-D, ResNet-18 encoders, two modality clients) through

- the in-process reference (:func:`flwr_semcom.split.reference.run_reference`, one process,
  the clients one after the other, ``num_threads`` torch threads), and
- ``flwr.simulation.run_simulation`` (two virtual SuperNodes, ``num_cpus=1`` each, so the
  two clients run in parallel on two cores) with :class:`strategies.split_training.SplitTraining`,

and reports the per-epoch wall time of each (training pass only; Ray start-up, client
discovery and evaluation are reported separately), ``ratio_sim_s<S>`` = simulation / reference,
the test accuracy after the epoch, and a profile of where the simulation's time goes
(client load / compute / save, server steps, waiting for replies, per-exchange overhead).
With ``--graph-reference`` it also times, for S = 1, the reference that keeps autograd graphs
instead of replaying the forward (the cost of the recompute a client must do between messages).

``--accuracy`` runs the accuracy-cost study instead: the reference (equal to the Flower run,
tests/test_split_equivalence.py) with the default small CNN for several rounds per S.

Usage::

    python benchmarks/split_overhead.py            # 640 training samples, S = 1 4 16
    python benchmarks/split_overhead.py --quick    # a smoke run (256 training samples)
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from flwr_semcom.accounting import atomic_write  # noqa: E402
from flwr_semcom.config import compose_config  # noqa: E402
from simulations.experiments.split_supervised import reference  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def overrides_for(args: argparse.Namespace, steps: int) -> str:
    samples = 320 if args.quick else args.samples
    return (
        f"model=resnet18 data.num_samples={samples} data.image_size=32 data.test_fraction=0.2 "
        f"strategy.batch_size=64 strategy.rounds=1 strategy.steps_per_message={steps} "
        f"strategy.profile=true num_threads={args.threads}"
    )


def simulate(overrides: str) -> dict[str, Any]:
    """One simulation-engine run; returns the strategy's round row and start-up time."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from flwr_semcom.accounting import CommLedger
    from flwr_semcom.client_app import make_app
    from simulations.experiments.split_supervised import build_strategy

    client_app = make_app({"experiment": "split_supervised", "overrides": overrides})

    out: dict[str, Any] = {}
    server_app = ServerApp()
    t_launch = time.perf_counter()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = compose_config("split_supervised", overrides)
        strategy = build_strategy(cfg, CommLedger())
        t0 = time.perf_counter()
        strategy.discover(grid)
        out["startup_s"] = t0 - t_launch
        out["discover_s"] = time.perf_counter() - t0
        strategy.start(grid)
        out["row"] = strategy.history[-1]
        out["ledger"] = strategy.ledger.summary()

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


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "split_overhead",
        "setup": {
            "encoder": "resnet18",
            "image_size": 32,
            "batch_size": 64,
            "clients": 2,
            "quick": bool(args.quick),
            "torch_threads_per_process": args.threads,
            "reference": "one process, clients sequential, forward replayed (recompute=True)",
            "simulation": "run_simulation, 2 SuperNodes, client_resources num_cpus=1",
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "per_s": {},
    }
    for steps in args.steps:
        ov = overrides_for(args, steps)
        cfg = compose_config("split_supervised", ov)
        ref = reference(cfg, rounds=1)
        ref_row = ref.history[-1]
        entry: dict[str, Any] = {
            "reference_epoch_s": ref_row["train_time_s"],
            "reference_critical_path_s": ref_row["critical_path_s"],
            "reference_eval_s": ref_row["eval_time_s"],
            "reference_test_accuracy": ref_row["test_accuracy"],
        }
        if args.graph_reference and steps == 1:
            graph = reference(cfg, rounds=1, recompute=False, evaluate=False)
            entry["reference_graph_epoch_s"] = graph.history[-1]["train_time_s"]
        sim = simulate(ov)
        row = sim["row"]
        entry.update(
            {
                "sim_epoch_s": row["train_time_s"],
                "sim_eval_s": row["eval_time_s"],
                "sim_startup_s": sim["startup_s"],
                "sim_discover_s": sim["discover_s"],
                "sim_total_s": sim["total_s"],
                "sim_test_accuracy": row["test_accuracy"],
                "train_loss": row["loss"],
                "ratio": row["train_time_s"] / ref_row["train_time_s"],
                "ratio_vs_critical_path": row["train_time_s"] / ref_row["critical_path_s"],
                "profile": profile_of(row),
                "ledger": sim["ledger"],
            }
        )
        entry["load_average_after"] = list(os.getloadavg())
        report["per_s"][str(steps)] = entry
        report[f"ratio_sim_s{steps}"] = entry["ratio"]
        report[f"ratio_sim_s{steps}_vs_critical_path"] = entry["ratio_vs_critical_path"]
        report[f"accuracy_s{steps}"] = entry["sim_test_accuracy"]
        print(
            f"S={steps:3d}: reference {entry['reference_epoch_s']:7.1f} s/epoch  "
            f"simulation {entry['sim_epoch_s']:7.1f} s/epoch  ratio {entry['ratio']:.3f}  "
            f"test acc {entry['sim_test_accuracy']:.3f} "
            f"(reference {entry['reference_test_accuracy']:.3f})",
            flush=True,
        )
    report["goals"] = {"ratio_sim_s1": 1.5, "ratio_sim_s16": 1.1}
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
    """Per-exchange latency with a tiny model (S = 1), for two server poll intervals."""
    report: dict[str, Any] = {"benchmark": "split_exchange_latency", "per_poll": {}}
    for poll in (0.005, 0.1):
        ov = (
            "data.num_samples=400 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
            f"strategy.batch_size=8 strategy.rounds=1 strategy.steps_per_message=1 "
            f"strategy.poll_interval={poll} strategy.profile=true"
        )
        row = simulate(ov)["row"]
        prof = profile_of(row)
        client = prof["client_load_s"] + prof["client_compute_s"] + prof["client_save_s"]
        entry = {
            "exchanges": prof["exchanges"],
            "exchange_median_s": row["wait_median_s"],
            "exchange_mean_s": row["wait_s"] / prof["exchanges"],
            "client_time_per_exchange_s": client / prof["exchanges"],
            "overhead_per_exchange_s": (row["wait_s"] - client) / prof["exchanges"],
        }
        report["per_poll"][str(poll)] = entry
        print(f"poll {poll:5.3f} s: {json.dumps({k: round(v, 4) for k, v in entry.items()})}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on 256 training samples")
    parser.add_argument("--samples", type=int, default=800, help="scenes (80%% train), default 800")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 16], help="S values")
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
    os.environ.setdefault("RAY_TMPDIR", "/tmp/ray")
    t0 = time.perf_counter()
    if args.accuracy:
        report, default = accuracy(args), "split_accuracy_vs_s.json"
    elif args.latency:
        report, default = latency(args), "split_latency.json"
    else:
        report = overhead(args)
        default = "split_overhead_quick.json" if args.quick else "split_overhead.json"
    report["benchmark_wall_s"] = time.perf_counter() - t0
    out = args.out or RESULTS / default
    with atomic_write(out) as fh:
        json.dump(report, fh, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k.startswith(("ratio", "accuracy_s"))}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
