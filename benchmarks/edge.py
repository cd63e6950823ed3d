"""Per-exchange latency of split learning in the loopback TLS deployment: cold vs warm clients
(issue #16, items 1, 2 and the latency part of 4).

Each run starts a fresh loopback deployment (:func:`simulations.deploy_local.local_deployment`:
TLS, SuperNode authentication, two SuperNodes, ``FLWR_LOG_LEVEL=DEBUG`` for millisecond
timestamps), runs ``split_supervised`` once with :data:`OVERRIDES` (S = 2: five
``train.split_step`` messages per node in the round) and reads every message's client-side
timeline from the SuperNode logs (:func:`simulations.deploy_latency.client_timeline`):

- ``exchange``: from one ``train.split_step`` arriving at a node (``Receiving``) to the next
  one arriving at the same node: what a split pass pays per exchange (client, reply, server,
  the SuperNode's idle poll);
- ``service``: ``Receiving`` → ``Sent successfully``: SuperExec poll + new ``flwr-clientapp``
  process + imports + handler (relay) + the SuperNode's reply poll;
- ``start_clientapp``, ``run_clientapp``, ``to_superlink``, ``gap`` as in deploy_latency.

Kinds (:data:`KINDS`): ``cold`` = no worker, Flower's 1 s SuperExec poll (how deployments ran
before issue #16); ``warm`` = a ``semcom-worker`` per SuperNode, the ``flwr-clientapp`` fork
server (deploy/clientapp_launcher.py) and ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` = 0.1 s
and the SuperNodes' adaptive polls (:mod:`flwr_semcom.runtime.fastnode`: 0.1-3 s idle, 20 ms
reply poll; ``semcom-deploy``'s defaults); ``warm_flowerpolls`` = warm with Flower's fixed 3 s
idle / 0.5 s reply sleeps (the ``warm`` of the records before that module, relabelled);
``warm_no_launcher``, ``warm_poll1``: one of the others off. One
invocation runs ``--kinds`` once each, in order, and appends them to ``--out``; the shell loop
of docs/deployment.md interleaves repeats (cold, warm, warm, cold, ...) with one lock hold per
invocation. ``--imports`` times the ClientApp process's imports instead (before: the full app,
what ``flwr_semcom.client_app`` imported up to issue #16; after: the relaying app), repeats
interleaved. Every record holds ``os.getloadavg()`` before and after. ``--summarise`` rewrites
the summary keys from the records (median, p90, spread = min / max of the runs' medians).

``--passes`` (item 4's ratios) times one Stage II pass of the main job's setting
(:data:`PASS_OVERRIDES`: ``split_supervised`` with the main job's Stage II hyper-parameters,
240 labelled scenes, batch 32, 8 batches = 8 exchanges per pass, S = 1, 3 rounds) on the three
engines, interleaved (in-process, simulation, deployment; the order reversed every other
repeat): ``inprocess`` = the in-process reference (one process, clients one after the other,
:func:`simulations.experiments.split_supervised.reference`); ``sim`` = ``semcom-run`` (Flower's
simulation engine, 2 SuperNodes); ``deploy`` = ``semcom-run --superlink`` against a fresh
loopback TLS deployment with warm clients (the ``warm`` kind). A pass is the strategy's
``train_time_s`` of a round; the first round (start-up, first batches) is reported but not in
the median. Per repeat the ratios deploy / in-process, sim / in-process and deploy / sim;
summary: their median and spread (min / max) over the repeats.

The summary also copies, from :data:`SCHEDULE_JSON` (benchmarks/split_schedule.py and
benchmarks/stage2_s8.py, docs/schedules.md), ``accuracy_gap_s8``: exact S = 1 minus the chosen
S > 1 setting at S = 8, mean over seeds, on ``split_supervised`` and per method on the main
job's Stage II (``accuracy_gap_s8_main_stage2_<method>`` with its paired 95 % interval).

Usage::

    python benchmarks/edge.py --kinds cold warm            # ~5 min, appends 2 runs
    python benchmarks/edge.py --passes --repeats 3         # ~12 min
    python benchmarks/edge.py --imports --repeats 4
    python benchmarks/edge.py --summarise
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flwr_semcom.accounting import atomic_write  # noqa: E402
from simulations.deploy_latency import client_timeline, timed_lines  # noqa: E402
from simulations.deploy_local import local_deployment  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "edge.json"
#: the tiny split_supervised of tests/test_deployment.py with S = 2: 7 batches → 4 groups →
#: 5 train.split_step messages per node (4 exchanges between them)
OVERRIDES = (
    "data.num_samples=48 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=6 strategy.rounds=1 strategy.eval_batch_size=16 "
    "strategy.steps_per_message=2"
)
#: kind → (warm clients, clientapp launcher, FLWR_SUPEREXEC_TASK_POLL_INTERVAL or None for
#: Flower's 1.0 s, adaptive SuperNode polls of flwr_semcom.runtime.fastnode)
KINDS: dict[str, tuple[bool, bool, float | None, bool]] = {
    "cold": (False, False, None, False),
    "warm": (True, True, 0.1, True),
    "warm_flowerpolls": (True, True, 0.1, False),
    "warm_no_launcher": (True, False, 0.1, True),
    "warm_poll1": (True, True, None, True),
}
#: the main job's Stage II setting (benchmarks/results/split_schedule.json
#: ``main_stage2_setting``): 8 batches of 32 per pass, cosine lr; 3 passes
PASS_OVERRIDES = (
    "data.label_fraction=0.1 strategy.batch_size=32 strategy.lr_schedule=cosine "
    "strategy.rounds=3 strategy.steps_per_message=1"
)
PASS_KINDS = ("inprocess", "sim", "deploy")
STEP = "train.split_step"
GOAL_S = 4.0
GOAL_GAP = 0.02
#: where the accuracy-vs-S study of the chosen S > 1 setting is (benchmarks/split_schedule.py,
#: benchmarks/stage2_s8.py): its gaps are copied into the summary (``accuracy_keys``)
SCHEDULE_JSON = ROOT / "benchmarks" / "results" / "split_schedule_group_end.json"
#: what a flwr-clientapp process imports: Flower's runtime, then the app (before / after)
IMPORTS = {
    "before": "import flwr.supernode.cli, flwr_semcom.client_app as c; c.app.full()",
    "after": "import flwr.supernode.cli, flwr_semcom.client_app",
}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def exchanges(dep_logs: dict[str, Path], nodes: int) -> list[dict[str, Any]]:
    """One row per ``train.split_step`` after the first at each node: the time since the
    previous one arrived there (``exchange``), and the message's own phases."""
    rows = []
    for k in range(nodes):
        recvs = [
            t
            for t, text in timed_lines(dep_logs[f"supernode{k}"])
            if text.startswith(f"Receiving: {STEP} message")
        ]
        rows += [{"node": k, "exchange": b - a} for a, b in zip(recvs, recvs[1:], strict=False)]
    return rows


def run_once(kind: str, nodes: int = 2) -> dict[str, Any]:
    """One deployment of ``kind``: start, run split_supervised once, read the timelines."""
    warm, launcher, poll, fast_polls = KINDS[kind]
    record: dict[str, Any] = {"kind": kind, "warm": warm, "launcher": launcher}
    record["task_poll_interval"] = poll
    record["fast_polls"] = fast_polls
    record["loadavg_before"] = _load()
    t0 = time.monotonic()
    with local_deployment(
        nodes,
        warm=warm,
        launcher=launcher,
        task_poll_interval=poll,
        log_level="DEBUG",
        fast_polls=fast_polls,
    ) as dep:
        record["startup_s"] = round(time.monotonic() - t0, 2)
        out = dep.workdir / "outputs"
        res = dep.run_experiment("split_supervised", f"{OVERRIDES} paths.output_dir={out}")
        if res.status != "finished:completed":
            raise SystemExit(f"{kind}: run {res.status}: {res.output[-2000:]}")
        msgs = [m for m in client_timeline(dep) if m["type"] == STEP]
        record["exchanges"] = exchanges(dep.logs, nodes)
    record["messages"] = [
        {**m, "service": float(m["start_clientapp"] or 0) + float(m["run_clientapp"] or 0)}
        | {"service_to_sent": _sum(m)}
        for m in msgs
    ]
    record["semcom_run_wall_s"] = round(res.wall_s, 2)
    record["loadavg_after"] = _load()
    return record


def _metrics(out: Path) -> list[dict[str, Any]]:
    files = sorted(out.rglob("metrics.json"))
    if len(files) != 1:
        raise SystemExit(f"expected one metrics.json under {out}, found {len(files)}")
    rows: list[dict[str, Any]] = json.loads(files[0].read_text())
    return rows


def pass_once(kind: str, workdir: Path) -> dict[str, Any]:
    """One run of :data:`PASS_OVERRIDES` on ``kind``'s engine; the passes' times."""
    record: dict[str, Any] = {"kind": kind, "loadavg_before": _load()}
    out = workdir / f"{kind}-{time.time_ns()}"
    t0 = time.monotonic()
    if kind == "inprocess":
        import torch

        from flwr_semcom.config import compose_config
        from simulations.experiments.split_supervised import reference

        threads = torch.get_num_threads()
        rows = reference(compose_config("split_supervised", PASS_OVERRIDES)).history
        torch.set_num_threads(threads)
    elif kind == "sim":
        cmd = [sys.executable, "-m", "simulations.launch", "--experiment", "split_supervised"]
        cmd += ["--overrides", f"{PASS_OVERRIDES} paths.output_dir={out}"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)  # noqa: S603
        if done.returncode != 0:
            raise SystemExit(f"sim: semcom-run exited {done.returncode}: {done.stderr[-2000:]}")
        rows = _metrics(out)
    elif kind == "deploy":
        with local_deployment(2, warm=True, launcher=True, task_poll_interval=0.1) as dep:
            record["startup_s"] = round(time.monotonic() - t0, 2)
            res = dep.run_experiment("split_supervised", f"{PASS_OVERRIDES} paths.output_dir={out}")
            if res.status != "finished:completed":
                raise SystemExit(f"deploy: run {res.status}: {res.output[-2000:]}")
        rows = _metrics(out)
    else:
        raise ValueError(f"kind: expected one of {PASS_KINDS}, got {kind!r}")
    record["wall_s"] = round(time.monotonic() - t0, 2)
    record["pass_s"] = [round(float(r["train_time_s"]), 3) for r in rows]  # the train pass
    record["pass_median_s"] = round(statistics.median(record["pass_s"][1:]), 3)
    record["test_accuracy"] = [round(float(r["test_accuracy"]), 5) for r in rows]
    record["loadavg_after"] = _load()
    return record


def summarise_passes(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind the pass medians; per repeat (one run of each kind) the three ratios; their
    median and spread."""
    out: dict[str, Any] = {}
    for kind in PASS_KINDS:
        values = [r["pass_median_s"] for r in runs if r["kind"] == kind]
        if values:
            out[kind] = {"pass_s_median": round(statistics.median(values), 3), "runs": values}
    by_repeat: dict[int, dict[str, float]] = {}
    for r in runs:
        by_repeat.setdefault(int(r["repeat"]), {})[r["kind"]] = float(r["pass_median_s"])
    ratios: dict[str, list[float]] = {}
    for rep in by_repeat.values():
        for num, den in (("deploy", "inprocess"), ("sim", "inprocess"), ("deploy", "sim")):
            if num in rep and den in rep:
                ratios.setdefault(f"ratio_{num}_vs_{den}", []).append(rep[num] / rep[den])
    for key, values in ratios.items():
        out[key] = round(statistics.median(values), 3)
        out[f"{key}_spread"] = _spread([round(v, 3) for v in values])
        out[f"{key}_repeats"] = len(values)
    return out


def accuracy_keys(path: Path = SCHEDULE_JSON) -> dict[str, Any]:
    """``accuracy_gap_s8`` (exact S = 1 minus the chosen schedule at S = 8, mean over seeds) on
    ``split_supervised`` and on the main job's Stage II per method, copied from ``path``."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    out: dict[str, Any] = {"accuracy_source": str(path.relative_to(ROOT))}
    if "accuracy_gap_s8" in data:
        out["accuracy_gap_s8"] = round(float(data["accuracy_gap_s8"]), 4)
        out["accuracy_gap_s8_setting"] = data.get("overrides_per_schedule", {})
    main = data.get("main_job_stage2_s8", {})
    for method, block in main.items():
        if isinstance(block, dict) and "final_accuracy" in block:
            gap = block["final_accuracy"]["gap_paired_t"]
            out[f"accuracy_gap_s8_main_stage2_{method}"] = round(float(gap["mean_diff"]), 4)
            out[f"accuracy_gap_s8_main_stage2_{method}_ci95"] = [
                round(float(gap["ci95_low"]), 4),
                round(float(gap["ci95_high"]), 4),
            ]
    return out


def _sum(m: dict[str, Any]) -> float:
    return sum(float(m[k] or 0) for k in ("start_clientapp", "run_clientapp", "to_superlink"))


def time_imports(repeats: int) -> list[dict[str, Any]]:
    """Wall time of a fresh interpreter importing what a ClientApp process imports; the
    variants interleaved, the order reversed every other repeat."""
    rows = []
    for r in range(repeats):
        order = list(IMPORTS) if r % 2 == 0 else list(reversed(IMPORTS))
        for name in order:
            load = _load()
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", IMPORTS[name]], cwd=ROOT, check=True)  # noqa: S603
            rows.append(
                {"variant": name, "wall_s": round(time.perf_counter() - t0, 3), "loadavg": load}
            )
    return rows


def _stats(values: list[float]) -> dict[str, float]:
    xs = sorted(values)
    p90 = xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]
    return {
        "n": len(xs),
        "median": round(statistics.median(xs), 3),
        "p90": round(p90, 3),
        "min": round(xs[0], 3),
        "max": round(xs[-1], 3),
    }


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    """The summary keys from ``data["runs"]`` and ``data["imports"]``."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        runs = [r for r in data.get("runs", []) if r["kind"] == kind]
        if not runs:
            continue
        entry: dict[str, Any] = {"runs": len(runs)}
        for key, rows in (("exchange", "exchanges"), ("service", "messages")):
            values = [float(x[key]) for r in runs for x in r[rows]]
            per_run = [statistics.median(float(x[key]) for x in r[rows]) for r in runs]
            entry[f"{key}_s"] = _stats(values)
            entry[f"{key}_s_run_medians"] = [round(v, 3) for v in per_run]
        for phase in ("start_clientapp", "run_clientapp", "to_superlink", "gap"):
            values = [float(m[phase]) for r in runs for m in r["messages"] if m[phase] is not None]
            entry[f"{phase}_s"] = _stats(values)
        entry["semcom_run_wall_s"] = [r["semcom_run_wall_s"] for r in runs]
        entry["loadavg"] = [r["loadavg_before"][0] for r in runs] + [
            r["loadavg_after"][0] for r in runs
        ]
        out[kind] = entry
    if "warm" in out:
        out["deploy_exchange_median_s"] = out["warm"]["exchange_s"]["median"]
        out["deploy_exchange_p90_s"] = out["warm"]["exchange_s"]["p90"]
        out["deploy_exchange_median_s_spread"] = _spread(out["warm"]["exchange_s_run_medians"])
    if "cold" in out:
        out["deploy_exchange_median_s_cold"] = out["cold"]["exchange_s"]["median"]
        out["deploy_exchange_p90_s_cold"] = out["cold"]["exchange_s"]["p90"]
        out["deploy_exchange_median_s_cold_spread"] = _spread(out["cold"]["exchange_s_run_medians"])
    for variant in IMPORTS:
        walls = [i["wall_s"] for i in data.get("imports", []) if i["variant"] == variant]
        if walls:
            out[f"clientapp_import_s_{variant}"] = _stats(walls)
    out.update(accuracy_keys())
    stage = data.get("stage2_pass")
    if stage and stage.get("runs"):
        for key, value in summarise_passes(stage["runs"]).items():
            if key.startswith("ratio_"):
                out[f"stage2_pass_{key}"] = value
    out["goals"] = {"deploy_exchange_median_s": GOAL_S, "accuracy_gap_s8": GOAL_GAP}
    return out


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/edge.py", description=__doc__.splitlines()[0])
    p.add_argument("--kinds", nargs="*", default=[], choices=list(KINDS))
    p.add_argument("--imports", action="store_true", help="time the ClientApp imports")
    p.add_argument("--repeats", type=int, default=3, help="--imports / --passes repeats")
    p.add_argument(
        "--passes", action="store_true", help="Stage II pass: deploy vs sim vs in-process"
    )
    p.add_argument("--summarise", action="store_true", help="only rewrite the summary")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    data: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    data.setdefault("benchmark", "benchmarks/edge.py")
    data.setdefault("setup", {"overrides": OVERRIDES, "nodes": 2, "tls": True, "auth": True})
    data["setup"]["cpus"] = os.cpu_count()
    for kind in args.kinds:
        record = run_once(kind)
        data.setdefault("runs", []).append(record)
        ex = [x["exchange"] for x in record["exchanges"]]
        print(f"{kind}: exchange median {statistics.median(ex):.2f} s over {len(ex)}", flush=True)
        with atomic_write(args.out) as fh:
            json.dump(data, fh, indent=1)
    if args.imports:
        data.setdefault("imports", []).extend(time_imports(args.repeats))
    if args.passes:
        stage = data.setdefault("stage2_pass", {"overrides": PASS_OVERRIDES, "runs": []})
        first = 1 + max((int(r["repeat"]) for r in stage["runs"]), default=-1)
        with tempfile.TemporaryDirectory(prefix="semcom-edge-passes-") as tmp:
            for rep in range(first, first + args.repeats):
                order = PASS_KINDS if rep % 2 == 0 else tuple(reversed(PASS_KINDS))
                for kind in order:
                    record = pass_once(kind, Path(tmp)) | {"repeat": rep}
                    stage["runs"].append(record)
                    print(
                        f"repeat {rep} {kind}: pass {record['pass_median_s']:.2f} s "
                        f"(passes {record['pass_s']})",
                        flush=True,
                    )
                    with atomic_write(args.out) as fh:
                        json.dump(data, fh, indent=1)
        stage.update(summarise_passes(stage["runs"]))
        print(json.dumps({k: v for k, v in stage.items() if k.startswith("ratio_")}, indent=1))
    data.update(summarise(data))
    with atomic_write(args.out) as fh:
        json.dump(data, fh, indent=1)
    keys = [k for k in data if k.startswith(("deploy_", "clientapp_"))]
    print(json.dumps({k: data[k] for k in keys}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
