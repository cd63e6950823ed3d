"""Scale benchmark: round time and peak memory of a simulation with 10 to 100 devices.

For each size N (default 10, 26, 50, 100; half of the devices per modality, so N must be
even — 25 cannot be split into two equal modality groups and is run as 26) this runs the
paper-1 experiment through ``semcom-run`` on Flower's simulation engine (Ray, ``num-cpus=1``
per virtual client, so at most two clients compute at once on this 2-core machine) with

- ``N / 2`` RGB and ``N / 2`` depth devices (``data.devices_per_modality = N / 2``), each
  pair holding its own shard of ``--scenes`` training scenes (weak scaling: the data grows
  with the devices, so an ideal system's round time grows linearly in N);
- the small CNN (widths 8-16-32-64, k = 8 symbols), 16 px scenes;
- SimCLR Stage I in the ``local`` placement (one message per device per round, FedAvg of the
  encoders per modality) and Stage II split fine-tuning (the split runtime over every shard
  in turn, then FedAvg per modality), one round each.

Measured per size: the Stage I and Stage II round times (``round_time_s`` in the run's
``metrics.csv``), the wall time of the whole command, and the peak memory of the process tree
of ``semcom-run`` (SuperLink, ServerApp, Ray and its workers), sampled every 0.5 s from
``/proc``: the peak of the summed PSS (shared pages counted once — the real footprint) and of
the summed RSS (an upper bound). ``ratio_round_time_100_vs_10`` = Stage II round time at the
largest size / at the smallest, ``linearity`` = that ratio / (N_max / N_min) (≤ 1: at most
linear growth).

Usage::

    python benchmarks/scale.py                   # 10 26 50 100 devices (~10 min here)
    python benchmarks/scale.py --sizes 10 20     # a quick run

Writes ``benchmarks/results/scale.json`` and ``scale.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flwr_semcom.accounting import atomic_write  # noqa: E402
from flwr_semcom.results import save_figure  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB; (0, 0) when it is gone or unreadable."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        return 0, 0
    return pss, rss


class PeakSampler(threading.Thread):
    """Samples the summed PSS / RSS of a process tree until stopped; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_pss = self.peak_rss = 0
        self.peak_procs = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            pids = tree(self.pid)
            pss = rss = 0
            for p in pids:
                a, b = memory_kib(p)
                pss, rss = pss + a, rss + b
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_procs = max(self.peak_procs, len(pids))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def overrides_for(devices: int, scenes: int, out_dir: Path) -> str:
    dpm = devices // 2
    total = int(round(dpm * scenes / 0.8))  # 80 % of the scenes are training scenes
    return (
        f"experiment.methods=[simclr] data.devices_per_modality={dpm} "
        f"data.num_samples={total} data.image_size=16 data.test_fraction=0.2 "
        f"model.widths=[8,16,32,64] model.num_symbols=8 model.decoder_hidden=32 "
        f"pretrain.rounds=1 pretrain.batch_size=32 pretrain.projector=[32,32] "
        f"strategy.rounds=1 strategy.batch_size=32 finetune.precise_bn_samples=64 "
        f"experiment.fail_on_divergence=false paths.output_dir={out_dir}"
    )


def run_size(devices: int, scenes: int, work: Path) -> dict[str, Any]:
    out_dir = work / f"n{devices}"
    cmd = [
        str(ROOT / ".venv" / "bin" / "semcom-run"),
        "--experiment",
        "multimodal",
        "--overrides",
        overrides_for(devices, scenes, out_dir),
        "--flwr-home",
        str(work / f"home{devices}"),
        "--timeout",
        "1800",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = PeakSampler(proc.pid)
    sampler.start()
    log, _ = proc.communicate()
    sampler.stop()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(log[-3000:], file=sys.stderr)
        raise SystemExit(
            f"scale benchmark: the {devices}-device run failed (exit {proc.returncode})"
        )
    runs = sorted((out_dir / "multimodal").iterdir())
    with open(runs[-1] / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    stage_time = {
        stage: sum(float(r["round_time_s"]) for r in rows if r["stage"] == stage)
        for stage in ("pretrain", "finetune")
    }
    return {
        "devices": devices,
        "devices_per_modality": devices // 2,
        "training_scenes": (devices // 2) * scenes,
        "stage1_round_time_s": stage_time["pretrain"],
        "stage2_round_time_s": stage_time["finetune"],
        "command_wall_time_s": wall,
        "peak_pss_mib": sampler.peak_pss / 1024,
        "peak_rss_sum_mib": sampler.peak_rss / 1024,
        "peak_processes": sampler.peak_procs,
        "results_dir": str(runs[-1]),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["devices"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(
        n, [r["stage1_round_time_s"] for r in rows], "o-", label="Stage I round (local + FedAvg)"
    )
    a.plot(
        n, [r["stage2_round_time_s"] for r in rows], "s-", label="Stage II round (split + FedAvg)"
    )
    lin = [rows[0]["stage2_round_time_s"] * x / n[0] for x in n]
    a.plot(n, lin, "k:", label="linear in N (from N min)")
    a.set_xlabel("simulated devices N")
    a.set_ylabel("round time (s)")
    a.legend(fontsize=7)
    b.plot(n, [r["peak_pss_mib"] / 1024 for r in rows], "o-", label="peak PSS (process tree)")
    b.plot(n, [r["peak_rss_sum_mib"] / 1024 for r in rows], "s--", label="peak summed RSS")
    b.axhline(8, color="r", lw=0.8, label="goal 8 GB")
    b.set_xlabel("simulated devices N")
    b.set_ylabel("memory (GiB)")
    b.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)  # PNG + PDF twin
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 26, 50, 100])
    p.add_argument("--scenes", type=int, default=40, help="training scenes per device pair")
    p.add_argument("--out", default=str(RESULTS / "scale.json"))
    args = p.parse_args(argv)
    bad = [n for n in args.sizes if n < 2 or n % 2]
    if bad:
        print(
            f"error: --sizes must be even numbers >= 2 (half per modality), got {bad}",
            file=sys.stderr,
        )
        return 2
    if args.scenes < 1:
        print(f"error: --scenes must be >= 1, got {args.scenes}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="semcom-scale-") as tmp:
        for n in sorted(args.sizes):
            row = run_size(n, args.scenes, Path(tmp))
            row.pop("results_dir")
            rows.append(row)
            print(
                f"[scale] N={n:4d}: Stage I round {row['stage1_round_time_s']:.1f} s, "
                f"Stage II round {row['stage2_round_time_s']:.1f} s, "
                f"command {row['command_wall_time_s']:.0f} s, peak PSS "
                f"{row['peak_pss_mib']:.0f} MiB (summed RSS {row['peak_rss_sum_mib']:.0f} MiB, "
                f"{row['peak_processes']} processes)",
                flush=True,
            )
    first, last = rows[0], rows[-1]
    ratio = last["stage2_round_time_s"] / first["stage2_round_time_s"]
    growth = last["devices"] / first["devices"]
    result = {
        "benchmark": "scale",
        "sizes": [r["devices"] for r in rows],
        "rows": rows,
        f"ratio_round_time_{last['devices']}_vs_{first['devices']}": ratio,
        "linearity": ratio / growth,
        "peak_pss_gib_max": max(r["peak_pss_mib"] for r in rows) / 1024,
        "goal": "peak memory <= 8 GB at 100 devices; round time at most linear in N",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_end": os.getloadavg(),
        },
        "scenes_per_device_pair": args.scenes,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as f:
        json.dump(result, f, indent=2)
    plot(rows, out.with_suffix(".png"))
    print(
        f"[scale] Stage II round time x{ratio:.2f} for x{growth:.1f} devices "
        f"(linearity {ratio / growth:.2f}; <= 1 is at most linear); "
        f"peak PSS {result['peak_pss_gib_max']:.2f} GiB; wrote {out}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
