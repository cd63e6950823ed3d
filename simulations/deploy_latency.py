"""Per-message latency of a loopback deployment, split into its parts (docs/deployment.md).

Starts :func:`simulations.deploy_local.local_deployment` with ``FLWR_LOG_LEVEL=DEBUG`` (Flower
then timestamps every log line, to the millisecond), runs ``node_check`` several times (one
``query.node_info`` message per SuperNode per run), and reads the timeline of every message
from the SuperLink's, the SuperNodes' and the ServerApp's logs:

========== ==========================================================================
push       ServerApp pushes the instruction (SuperLink ``Runtime.PushMessages``)
recv       SuperNode pulls it (``Receiving: <type> message``)
proc       the new ``flwr-clientapp`` process is up (``Start `flwr-clientapp` process``)
reply      the ClientApp hands its reply to the SuperNode (SuperNode ``Runtime.PushMessages``)
sent       SuperNode pushed the reply to the SuperLink (``Sent successfully``)
got        the ServerApp has it (its ``node <id>: ...`` log line)
========== ==========================================================================

Usage::

    python -m simulations.deploy_latency --runs 3 --num-supernodes 2 --task-poll-interval 0.05
    python -m simulations.deploy_latency --cold ...   # no semcom-worker per SuperNode

Split-learning exchanges, cold vs warm, with interleaved repeats: benchmarks/edge.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from flwr_semcom.accounting import atomic_write
from simulations.deploy_local import DeploymentError, LocalDeployment, local_deployment

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(
    r"^(?:DEBUG|INFO|WARNING|ERROR)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\s*:\s*(.*)$"
)

#: phase name -> (start event, end event); the table's columns, in order.
PHASES = {
    "to_node": ("push", "recv"),
    "start_clientapp": ("recv", "proc"),
    "run_clientapp": ("proc", "reply"),
    "to_superlink": ("reply", "sent"),
    "to_serverapp": ("sent", "got"),
    "round_trip": ("push", "got"),
}

PHASE_HELP = {
    "to_node": "SuperNode idle poll (3 s in 1.41, fixed)",
    "start_clientapp": "SuperExec task poll + new process + `import flwr`",
    "run_clientapp": "FAB install, `import torch, flwr_semcom`, handler",
    "to_superlink": "SuperNode forwards the reply",
    "to_serverapp": "ServerApp pull interval (send_and_receive: 3 s)",
    "round_trip": "push -> reply in the ServerApp",
}


def timed_lines(path: Path) -> list[tuple[float, str]]:
    """``(unix time, message)`` for every timestamped Flower log line of ``path``."""
    out = []
    for raw in path.read_text(errors="replace").splitlines():
        m = _LINE.match(_ANSI.sub("", raw).strip())
        if m:
            stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
            out.append((stamp.timestamp(), m.group(2)))
    return out


def node_messages(lines: Iterable[tuple[float, str]]) -> list[dict[str, float | str]]:
    """Client-side events of every message a SuperNode handled, in order."""
    events = {
        "proc": "Start `flwr-clientapp` process",
        "reply": "Runtime.PushMessages",
        "sent": "Sent successfully",
    }
    msgs: list[dict[str, float | str]] = []
    for t, text in lines:
        m = re.match(r"Receiving: (\S+) message", text)
        if m:
            msgs.append({"type": m.group(1), "recv": t})
            continue
        if msgs:
            for name, marker in events.items():
                if name not in msgs[-1] and text.startswith(marker):
                    msgs[-1][name] = t
    return msgs


@dataclass
class MessageTiming:
    """The timeline of one query message, as seconds after its push."""

    run: int
    node: int
    push: float
    recv: float
    proc: float
    reply: float
    sent: float
    got: float

    def phases(self) -> dict[str, float]:
        d = asdict(self)
        return {name: d[b] - d[a] for name, (a, b) in PHASES.items()}


def node_check_timings(dep: LocalDeployment, run_logs: Sequence[Path]) -> list[MessageTiming]:
    """Timelines of the ``query.node_info`` messages of the ``node_check`` runs in the logs."""
    pushes = [t for t, text in timed_lines(dep.logs["superlink"]) if text == "Runtime.PushMessages"]
    per_node = [
        [m for m in node_messages(timed_lines(dep.logs[f"supernode{k}"])) if "sent" in m]
        for k in range(len(dep.node_ids))
    ]
    timings = []
    for run, log in enumerate(run_logs):
        got = {
            int(m.group(1)): t
            for t, text in timed_lines(log)
            if (m := re.match(r"node (\d+): ", text))
        }
        if not got:
            raise DeploymentError(f"no reply lines in {log}")
        first_got = min(got.values())
        push = max(p for p in pushes if p <= first_got)
        for k, node_id in enumerate(dep.node_ids):
            msg = next(m for m in per_node[k] if float(m["recv"]) >= push)
            timings.append(
                MessageTiming(
                    run=run,
                    node=k,
                    push=push,
                    recv=float(msg["recv"]),
                    proc=float(msg["proc"]),
                    reply=float(msg["reply"]),
                    sent=float(msg["sent"]),
                    got=got[node_id],
                )
            )
    return timings


def client_timeline(dep: LocalDeployment) -> list[dict[str, float | str | int | None]]:
    """Client-side phases of every message each SuperNode handled (any experiment).

    ``gap`` is the time from a node's previous reply (``sent``) to its next message
    (``recv``): server compute, the server's pull interval and the SuperNode's idle poll.
    """
    rows: list[dict[str, float | str | int | None]] = []
    for k in range(len(dep.node_ids)):
        prev_sent: float | None = None
        for m in node_messages(timed_lines(dep.logs[f"supernode{k}"])):
            if "sent" not in m or "proc" not in m or "reply" not in m:
                continue
            recv, proc = float(m["recv"]), float(m["proc"])
            reply, sent = float(m["reply"]), float(m["sent"])
            rows.append(
                {
                    "node": k,
                    "type": str(m["type"]),
                    "gap": None if prev_sent is None else recv - prev_sent,
                    "start_clientapp": proc - recv,
                    "run_clientapp": reply - proc,
                    "to_superlink": sent - reply,
                }
            )
            prev_sent = sent
    return rows


def summarise(timings: Sequence[MessageTiming]) -> dict[str, dict[str, float]]:
    """Median, min and max of every phase."""
    out = {}
    for name in PHASES:
        values = [t.phases()[name] for t in timings]
        out[name] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
    return out


def measure(
    runs: int,
    num_nodes: int,
    task_poll_interval: float | None,
    *,
    tls: bool = True,
    auth: bool = True,
    warm: bool = True,
) -> dict[str, object]:
    """Run ``node_check`` ``runs`` times on a fresh deployment; return timings and summary.
    ``warm``: a ``semcom-worker`` per SuperNode (``False``: every ClientApp cold)."""
    load_before = os.getloadavg()
    with local_deployment(
        num_nodes,
        tls=tls,
        auth=auth,
        task_poll_interval=task_poll_interval,
        log_level="DEBUG",
        warm=warm,
    ) as dep:
        walls: list[float] = []
        logs: list[Path] = []
        out_dir = dep.workdir / "outputs"
        for _ in range(runs):
            res = dep.run_experiment(
                "node_check",
                f"paths.output_dir={out_dir} experiment.num_nodes={num_nodes}",
                timeout=600,
            )
            if res.returncode != 0:
                raise DeploymentError(f"node_check failed ({res.status}): {res.output[-500:]}")
            walls.append(res.wall_s)
            logs.append(dep.logs[f"run-{len(logs)}"])
        timings = node_check_timings(dep, logs)
    return {
        "num_nodes": num_nodes,
        "task_poll_interval": task_poll_interval,
        "tls": tls,
        "auth": auth,
        "warm": warm,
        "runs": runs,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "semcom_run_wall_s": walls,
        "messages": [{**asdict(t), **t.phases()} for t in timings],
        "summary": summarise(timings),
    }


def markdown(results: Sequence[dict[str, object]]) -> str:
    """One table row per configuration: median (min-max) seconds per phase."""
    head = "| nodes | task poll | n | " + " | ".join(PHASES) + " |"
    rows = [head, "|" + "---|" * (len(PHASES) + 3)]
    for r in results:
        summary = r["summary"]
        assert isinstance(summary, dict)
        cells = [
            f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"
            for s in (summary[name] for name in PHASES)
        ]
        poll = r["task_poll_interval"] if r["task_poll_interval"] is not None else "1.0 (default)"
        n = len(r["messages"]) if isinstance(r["messages"], list) else 0
        rows.append(f"| {r['num_nodes']} | {poll} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulations.deploy_latency", description=__doc__)
    p.add_argument("--runs", type=int, default=3, help="node_check runs per configuration")
    p.add_argument("--num-supernodes", type=int, nargs="+", default=[2])
    p.add_argument(
        "--task-poll-interval",
        type=float,
        nargs="+",
        default=[None],
        help="FLWR_SUPEREXEC_TASK_POLL_INTERVAL values to compare (omit for Flower's 1.0 s)",
    )
    p.add_argument("--default-poll", action="store_true", help="also measure Flower's default")
    p.add_argument("--json", default=None, help="write all timings to this JSON file")
    p.add_argument(
        "--experiment",
        default=None,
        help="instead of node_check: run this experiment once per configuration and report "
        "the client-side phases of every message",
    )
    p.add_argument("--overrides", default="", help="hydra overrides for --experiment")
    p.add_argument("--cold", action="store_true", help="no semcom-worker per SuperNode")
    args = p.parse_args(argv)
    if args.experiment:
        return _experiment_mode(args)
    polls: list[float | None] = list(args.task_poll_interval)
    if args.default_poll and None not in polls:
        polls.insert(0, None)
    results = []
    try:
        for nodes in args.num_supernodes:
            for poll in polls:
                results.append(measure(args.runs, nodes, poll, warm=not args.cold))
                print(markdown(results[-1:]), flush=True)
    except DeploymentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(markdown(results))
    if args.json:
        with atomic_write(args.json) as fh:
            json.dump(results, fh, indent=1)
    return 0


def _metrics_rows(results_dir: Path | None) -> list[dict[str, str]]:
    """The run's metrics.csv rows (round times etc.), if it wrote one."""
    if results_dir is None or not (results_dir / "metrics.csv").is_file():
        return []
    with open(results_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _experiment_mode(args: argparse.Namespace) -> int:
    polls: list[float | None] = list(args.task_poll_interval)
    out: list[dict[str, object]] = []
    for nodes in args.num_supernodes:
        for poll in polls:
            load_before = os.getloadavg()
            try:
                with local_deployment(
                    nodes, task_poll_interval=poll, log_level="DEBUG", warm=not args.cold
                ) as dep:
                    over = f"{args.overrides} paths.output_dir={dep.workdir / 'outputs'}"
                    res = dep.run_experiment(args.experiment, over.strip(), timeout=3600)
                    rows = client_timeline(dep)
                    metrics = _metrics_rows(res.results_dir)
            except DeploymentError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            out.append(
                {
                    "experiment": args.experiment,
                    "overrides": args.overrides,
                    "num_nodes": nodes,
                    "task_poll_interval": poll,
                    "warm": not args.cold,
                    "status": res.status,
                    "semcom_run_wall_s": res.wall_s,
                    "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(),
                    "metrics": metrics,
                    "messages": rows,
                }
            )
            print(
                f"| node | type | gap | start_clientapp | run_clientapp | to_superlink |  "
                f"({nodes} nodes, task poll {poll}, {res.status}, {res.wall_s:.1f} s)"
            )
            for r in rows:
                cells = [r["gap"], r["start_clientapp"], r["run_clientapp"], r["to_superlink"]]
                text = ["-" if c is None else f"{float(c):.2f}" for c in cells]
                print(f"| {r['node']} | {r['type']} | " + " | ".join(text) + " |")
    if args.json:
        with atomic_write(args.json) as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
