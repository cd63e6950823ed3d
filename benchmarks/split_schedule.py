"""Accuracy vs S (``strategy.steps_per_message``) for the split schedules (docs/schedules.md).

For every schedule, S and seed: ``split_supervised`` (paper 1 Stage II from scratch, the
default small CNN, synthetic RGB-D, AWGN 10 dB) trained with the in-process reference
(:func:`flwr_semcom.split.reference.run_reference`, equal to the Flower run:
tests/test_split_equivalence.py, tests/test_split_schedules.py), then the final test accuracy.
Reports per (schedule, S) the per-seed values, mean, sample std and Student-t 95 % interval
(:mod:`flwr_semcom.stats`), and ``accuracy_gap_s8`` = mean(exact, S = 1) - mean(schedule, S = 8).

``--validation`` runs the same on a validation split carved from the training IDs (a
stratified 20 % of them, seed 12345; the test IDs are not used): the mode that chose the
schedule's hyper-parameters.

Usage::

    python benchmarks/split_schedule.py --steps 1 2 4 8 16 --seeds 0 1 2
    python benchmarks/split_schedule.py --validation --schedules replay --steps 8 \\
        --extra "strategy.schedule_compensation=1.0" --out /tmp/val.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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
from flwr_semcom.data.splits import stratified_split  # noqa: E402
from flwr_semcom.paper1.stage2 import supervised_device, supervised_server  # noqa: E402
from flwr_semcom.split import split_kwargs  # noqa: E402
from flwr_semcom.split.reference import run_reference  # noqa: E402
from flwr_semcom.split.settings import schedule_kwargs, server_gradients  # noqa: E402
from flwr_semcom.stats import summarize  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VALIDATION_SEED = 12345


def one_run(overrides: str, validation: bool) -> dict[str, Any]:
    """Train ``split_supervised`` with the reference; the final accuracy and the history."""
    cfg = compose_config("split_supervised", overrides)
    k = split_kwargs(cfg)
    torch.set_num_threads(int(cfg.num_threads))
    server = supervised_server(cfg)
    if validation:
        y = server.labels[server.train_ids]
        tr, va = stratified_split(y, 0.2, VALIDATION_SEED)
        server.test_ids = server.train_ids[va]
        server.train_ids = server.train_ids[tr]
    clients = [supervised_device(cfg, p) for p in range(server.num_clients)]
    keys = ("rounds", "batch_size", "steps_per_message", "eval_batch_size", "seed", "drop_last")
    t0 = time.perf_counter()
    ref = run_reference(
        server,
        clients,
        device=k["device"],
        server_gradients=server_gradients(cfg),
        **{key: k[key] for key in keys},
        **schedule_kwargs(cfg),
    )
    hist = [
        {key: round(float(row[key]), 5) for key in ("loss", "train_accuracy", "test_accuracy")}
        for row in ref.history
    ]
    return {
        "final_accuracy": float(ref.history[-1]["test_accuracy"]),
        "history": hist,
        "wall_s": time.perf_counter() - t0,
    }


def cached_run(cache: Path | None, overrides: str, validation: bool) -> dict[str, Any]:
    """:func:`one_run`, stored in ``cache`` and reused from there, so a long study can run in
    several short pieces. The key is the *resolved* config (and ``validation``), not the
    overrides' text: a changed default in ``conf/`` makes a new entry, never a stale hit."""
    if cache is None:
        return one_run(overrides, validation)
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_yaml(compose_config("split_supervised", overrides), resolve=True)
    key = hashlib.sha1(f"{resolved}|{validation}".encode()).hexdigest()[:16]
    path = cache / f"{key}.json"
    if path.exists():
        stored: dict[str, Any] = json.loads(path.read_text())
        return stored
    out = one_run(overrides, validation)
    out.update(overrides=overrides, validation=validation, load_average=list(os.getloadavg()))
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        json.dump(out, fh)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", nargs="+", default=["exact", "replay"])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--extra", default="", help="more hydra overrides (every run)")
    parser.add_argument(
        "--schedule-extra",
        action="append",
        default=[],
        metavar="SCHEDULE=OVERRIDES",
        help="more hydra overrides for one schedule's runs at S > 1 (repeatable), e.g. "
        "'replay=strategy.schedule_compensation=0.1'",
    )
    parser.add_argument("--validation", action="store_true", help="validation split, not test")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="reuse runs stored here")
    args = parser.parse_args(argv)
    schedule_extra: dict[str, str] = {}
    for item in args.schedule_extra:
        name, sep, overrides = item.partition("=")
        if not sep or name not in args.schedules:
            parser.error(
                f"--schedule-extra: expected SCHEDULE=OVERRIDES with SCHEDULE in "
                f"{args.schedules}, got {item!r}"
            )
        schedule_extra[name] = f"{schedule_extra.get(name, '')} {overrides}".strip()
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "split_accuracy_vs_s_per_schedule",
        "command": "python benchmarks/split_schedule.py " + " ".join(sys.argv[1:] or []),
        "experiment": "split_supervised (default small CNN, synthetic RGB-D 3000, AWGN 10 dB)",
        "evaluated_on": "validation (20 % of train, seed 12345)" if args.validation else "test",
        "metric": "test accuracy after the last round (final_accuracy)",
        "load_average_at_start": list(os.getloadavg()),
        "per_schedule": {},
    }
    for schedule in args.schedules:
        per_s: dict[str, Any] = {}
        for steps in args.steps:
            runs = {}
            for seed in args.seeds:
                # at S = 1 every schedule is exact, bit for bit (tests/test_split_schedules.py)
                run_schedule = "exact" if steps == 1 else schedule
                ov = (
                    f"seed={seed} strategy.rounds={args.rounds} strategy.steps_per_message="
                    f"{steps} strategy.schedule={run_schedule} {args.extra}"
                )
                if steps != 1 and schedule in schedule_extra:
                    ov = f"{ov.strip()} {schedule_extra[schedule]}"
                runs[str(seed)] = cached_run(args.cache, ov.strip(), args.validation)
                print(
                    f"{schedule:8s} S={steps:3d} seed={seed}: "
                    f"{runs[str(seed)]['final_accuracy']:.4f} "
                    f"({runs[str(seed)]['wall_s']:.0f} s, load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
            values = [r["final_accuracy"] for r in runs.values()]
            per_s[str(steps)] = {
                "summary": summarize(values).as_dict(),
                "per_seed": {s: r["final_accuracy"] for s, r in runs.items()},
                "histories": {s: r["history"] for s, r in runs.items()},
            }
        report["per_schedule"][schedule] = per_s
    exact1 = report["per_schedule"].get("exact", {}).get("1")
    if exact1 is not None:
        for schedule, per_s in report["per_schedule"].items():
            for steps, entry in per_s.items():
                gap = exact1["summary"]["mean"] - entry["summary"]["mean"]
                report.setdefault("gaps", {}).setdefault(schedule, {})[f"s{steps}"] = gap
                if steps == "8" and schedule != "exact":
                    report["accuracy_gap_s8"] = gap
    report["overrides_every_run"] = args.extra
    report["overrides_per_schedule"] = schedule_extra
    report["load_average_at_end"] = list(os.getloadavg())
    report["benchmark_wall_s"] = time.perf_counter() - t0
    out = args.out or RESULTS / "split_schedule.json"
    with atomic_write(out) as fh:
        json.dump(report, fh, indent=1)
    print(
        json.dumps({"gaps": report.get("gaps"), "accuracy_gap_s8": report.get("accuracy_gap_s8")})
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
