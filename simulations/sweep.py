"""``semcom-sweep``: a hydra multirun over config values, one Flower run per point.

Example (paper-style SNR × method grid)::

    semcom-sweep --experiment main snr-db=0,10,20 strategy.steps_per_message=1,4

Each ``key=value`` word is what ``semcom-run`` takes (a run-config shortcut such as ``snr-db``,
``experiment=NAME``, or a hydra override of any ``conf/`` key); comma lists,
``range(a,b[,step])`` and ``choice(...)`` are expanded (hydra's own override grammar) and the
cartesian product is run, one ``semcom-run`` (one Flower run) per point. Results go to
``outputs/sweeps/<experiment>/<timestamp>/``:

- ``runs/<NNN>/<experiment>/<timestamp>/``: each point's own results folder;
- ``sweep.csv`` / ``sweep.json``: one row per point — the swept values, the run's exit
  status and the scalar entries of its ``summary.json`` (flattened, dotted keys);
- ``sweep.png``: ``--metric`` against the first swept key, one line per combination of the
  others (with ``seed`` swept: against the first other key, the mean over seeds with its
  95 % band).

Seeds: when ``seed`` is a swept key (``seed=0,1,2,3,4``), the points that differ only in their
seed are aggregated over seeds — mean, std, Student-t 95 % interval of every ``summary.json``
metric in ``aggregate.json`` / ``aggregate.csv`` (in the sweep folder, and per combination of
the other swept keys in ``aggregate/<key=value,...>/``), the learning curve with its 95 % band
beside it; layout in :mod:`simulations.sweep_seeds`. A ``--resume``d sweep writes the same
aggregate as an uninterrupted one (wall-time metrics aside).

All points are validated before the first run starts. A failed point is recorded and the
sweep goes on; the command exits 1 if any point failed.

``semcom-sweep --resume SWEEP_DIR`` continues a stopped or killed sweep with the arguments it
was started with (``sweep_args.json``): a point that finished ``ok`` (``runs/<NNN>/point.json``)
is kept as it is, a point whose run left a checkpoint is continued with ``semcom-run --resume``,
every other point runs again; ``sweep.csv`` then equals an uninterrupted sweep's (wall times
aside).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from simulations.processes import PROJECT_ROOT


def expand(overrides: list[str]) -> tuple[list[str], list[list[str]]]:
    """Split hydra overrides into swept keys and the list of points (override lists)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from flwr_semcom.config import ConfigError

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception as err:
        raise ConfigError(f"sweep overrides: {str(err).splitlines()[0]}") from None
    fixed: list[str] = []
    swept_keys: list[str] = []
    choices: list[list[str]] = []
    for ov in parsed:
        if ov.is_sweep_override():
            swept_keys.append(ov.key_or_group)
            choices.append([f"{ov.key_or_group}={v}" for v in ov.sweep_string_iterator()])
        else:
            fixed.append(str(ov.input_line))
    points = [fixed + list(combo) for combo in itertools.product(*choices)]
    return swept_keys, points


def _experiment(words: list[str], given: str | None) -> str:
    """The experiment: ``--experiment`` or an ``experiment=NAME`` word (not swept)."""
    from flwr_semcom.config import ConfigError

    named = [w.split("=", 1)[1] for w in words if w.startswith("experiment=")]
    chosen = {*named, *([given] if given else [])}
    if len(chosen) > 1 or any("," in n for n in named):
        raise ConfigError(f"experiment: one experiment per sweep, got {sorted(chosen)}")
    return chosen.pop() if chosen else "main"


def check_points(cfgs: list[Any], out_root: Path, launcher_args: list[str]) -> None:
    """Pre-flight of every point (:mod:`simulations.preflight`) with the launcher's options,
    before the sweep folder or the first run exists; ``ConfigError`` (one line) otherwise."""
    from flwr_semcom.config import ConfigError
    from simulations import launch, preflight

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage text: not one line
            opts = launch.build_parser().parse_args(launcher_args)
    except SystemExit:
        opts = None
    if opts is None or opts.words:
        raise ConfigError(
            f"--launcher-args: cannot parse {shlex.join(launcher_args)!r}; expected semcom-run "
            "options such as '--num-supernodes 4 --num-cpus 1'"
        )
    for cfg in cfgs:
        preflight.check_config(cfg, None if opts.superlink else opts.num_supernodes)
        if not opts.superlink:
            preflight.check_host(cfg, output=out_root)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys, keeping scalars only."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(data, (int, float, str, bool)) or data is None:
        out[prefix[:-1]] = data
    return out


def find_summary(folder: Path) -> Path | None:
    found = sorted(folder.glob("**/summary.json"))
    return found[-1] if found else None


def point_command(run_dir: Path, experiment: str, overrides: str) -> list[str]:
    """``semcom-run`` arguments of one point: ``--resume`` of its unfinished run when that run
    left a checkpoint (``run.json``), else a new run."""
    from flwr_semcom.checkpoint import CHECKPOINT_NAME, RUN_FILE

    started = [
        f.parent
        for f in sorted(run_dir.glob(f"*/*/{RUN_FILE}"))
        if (f.parent / CHECKPOINT_NAME).is_file()
    ]
    if started:
        return ["--resume", str(started[-1])]
    return ["--experiment", experiment, "--overrides", overrides]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="semcom-sweep", description=__doc__.split("\n")[0])
    p.add_argument(
        "words",
        nargs="*",
        metavar="key=value",
        help="as semcom-run (snr-db=0,10 or channel.snr_db=0,10); a,b,c lists are swept",
    )
    p.add_argument("--experiment", default=None, help="default: main")
    p.add_argument("--overrides", default="", help="fixed hydra overrides, as semcom-run's")
    p.add_argument("--metric", default=None, help="summary.json key to plot (dotted)")
    p.add_argument(
        "--curve",
        nargs="+",
        default=None,
        metavar="X Y [BY ...]",
        help="seed sweeps: metrics.json curve to draw with its band (default: chosen per run)",
    )
    p.add_argument(
        "--row-key", action="append", default=None, help="seed sweeps: as aggregate's --row-key"
    )
    p.add_argument("--output-dir", default=None, help="default: <paths.output_dir>/sweeps")
    p.add_argument("--launcher-args", default="", help="extra semcom-run options, quoted")
    p.add_argument(
        "--resume",
        default=None,
        metavar="SWEEP_DIR",
        help="continue this sweep folder with its own arguments (finished points are kept)",
    )
    args = p.parse_args(argv)
    if args.curve is not None and len(args.curve) < 2:
        print("error: --curve: expected X Y [BY ...] (metrics.json fields)", file=sys.stderr)
        return 2
    resume = Path(args.resume).resolve() if args.resume else None
    if resume is not None:
        if args.words or args.experiment or args.overrides:
            print("error: --resume continues a sweep with its own arguments", file=sys.stderr)
            return 2
        try:
            saved = json.loads((resume / "sweep_args.json").read_text())
        except (OSError, ValueError) as err:
            print(f"error: --resume: {resume}/sweep_args.json: {err}", file=sys.stderr)
            return 2
        for key in ("words", "experiment", "overrides", "metric", "output_dir", "launcher_args"):
            setattr(args, key, saved[key])
        for key in ("curve", "row_key"):  # absent from sweeps started before they existed
            setattr(args, key, saved.get(key))

    from flwr_semcom.config import ConfigError, compose_config, split_overrides
    from flwr_semcom.run_config import rename_error, sweep_overrides

    names: dict[str, str] = {}
    try:
        words = split_overrides(args.overrides) + list(args.words)
        args.experiment = _experiment(words, args.experiment)
        words, names = sweep_overrides(
            [w for w in words if not w.startswith("experiment=")], args.experiment
        )
        keys, points = expand(words)
        cfgs = [compose_config(args.experiment, pt) for pt in points]  # validate all first
        out_root = Path(args.output_dir or Path(str(cfgs[0].paths.output_dir)) / "sweeps")
        if not out_root.is_absolute():
            out_root = PROJECT_ROOT / out_root
        check_points(cfgs, out_root, split_overrides(args.launcher_args))
    except ConfigError as err:
        print(f"error: {rename_error(err, names)}", file=sys.stderr)
        return 2
    from flwr_semcom.results import Results, new_run_dir, write_json

    sweep_dir = resume or new_run_dir(out_root, args.experiment)
    results = Results(sweep_dir, metrics_name="sweep")
    if resume is None:
        write_json(sweep_dir / "sweep_args.json", vars(args))
    print(f"[semcom-sweep] {len(points)} point(s) over {keys or 'no swept key'} → {sweep_dir}")
    failed = 0
    for i, point in enumerate(points):
        run_dir = sweep_dir / "runs" / f"{i:03d}"
        done = run_dir / "point.json"
        if done.is_file():
            kept = json.loads(done.read_text())
            if kept.get("status") == "ok":
                print(f"[semcom-sweep] point {i + 1}/{len(points)}: finished already", flush=True)
                results.add(kept)
                continue
        overrides = shlex.join([*point, f"paths.output_dir={run_dir}"])
        how = point_command(run_dir, args.experiment, overrides)
        cmd = [sys.executable, "-m", "simulations.launch", *how, *args.launcher_args.split()]
        t0 = time.monotonic()
        print(f"[semcom-sweep] point {i + 1}/{len(points)}: {' '.join(point)}", flush=True)
        rc = subprocess.run(cmd, cwd=PROJECT_ROOT).returncode
        row: dict[str, Any] = {
            "point": i,
            **{k: v.split("=", 1)[1] for k, v in zip(keys, point[len(point) - len(keys) :])},
        }
        row.update(
            {
                "status": "ok" if rc == 0 else f"failed (exit {rc})",
                "wall_s": round(time.monotonic() - t0, 2),
            }
        )
        summary = find_summary(run_dir)
        if summary is not None:
            row.update(flatten(json.loads(summary.read_text())))
        failed += rc != 0
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(done, row)  # strict JSON, atomic
        results.add(row)
    metric = args.metric or next(
        (
            k
            for k in ("final_test_accuracy", "best_accuracy", "test_accuracy")
            if any(k in r for r in results.rows)
        ),
        None,
    )
    from simulations.sweep_seeds import plot_sweep, seed_aggregates

    if keys and metric:
        plot_sweep(sweep_dir, keys, results.rows, metric, f"{args.experiment} sweep")
    for folder in seed_aggregates(sweep_dir, keys, results.rows, args.curve, args.row_key):
        print(f"[semcom-sweep] aggregate over seeds → {folder}", flush=True)
    print(f"[semcom-sweep] done: {len(points) - failed} ok, {failed} failed → {sweep_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
