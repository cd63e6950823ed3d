"""Aggregate per-seed results folders: mean, std and Student-t 95 % interval of every metric.

Usage::

    python -m simulations.aggregate RUN_DIR [RUN_DIR ...] [--out DIR] [--paired A B]
        [--curve X Y [--by KEY ...]]

Each ``RUN_DIR`` is one seed of the same experiment: a results folder, or a folder holding
exactly one results folder below it (a sweep point, ``runs/<NNN>/``). From each the first of
``summary.json`` / ``metrics.json`` found (``--file`` to choose) is read; NaN / Infinity tokens
of older, non-strict files read as missing. The seed is the top-level ``seed`` of the
``config.yaml`` beside that file, else the top-level ``seed`` of the JSON; two folders with the
same seed are refused.

Every numeric value (booleans and strings are skipped) is keyed by its path, nested keys
joined with dots (``methods.decur.final_accuracy``; list items by their index, or by
``k=v`` of ``--row-key`` fields for lists of rows, e.g. ``method=decur,round=3.test_accuracy``).
Per key, over the seeds that have a finite value for it (flwr_semcom.stats):

- ``mean``; ``std``: sample standard deviation (divisor n - 1);
- ``ci95_low`` / ``ci95_high``: ``mean ± t_{0.975, n-1} · std / sqrt(n)`` (Student t over
  seeds); ``null`` with a single seed;
- ``n``, ``seeds``, ``values`` (per seed, in the order of ``seeds``) and ``missing_seeds``
  (seeds where the key is absent or null, e.g. a target never reached).

``aggregate.json`` and ``aggregate.csv`` are written next to the run folders (their common
parent, or ``--out``); run paths in them are relative to that folder. ``--paired A B`` adds a
paired t-test and a Wilcoxon signed-rank test of metric A against metric B over the seeds
having both. ``--curve X Y`` reads each seed's ``metrics.json`` rows and draws the mean of Y
against X with its 95 % band (``aggregate_<Y>.png`` + ``.pdf``), one line per value of the
``--by`` fields; ``--curve auto`` chooses as :func:`default_curve` (as ``semcom-sweep`` does).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr_semcom.results import plot_band, write_csv, write_json
from flwr_semcom.stats import paired_test, summarize

FILE_NAMES = ("summary.json", "metrics.json")
METHOD = (
    "mean over seeds; std: sample standard deviation (n - 1); ci95: two-sided 95 % Student-t "
    "interval of the mean, mean ± t(0.975, n-1)·std/sqrt(n); null when n = 1"
)
CSV_COLUMNS = ("metric", "mean", "std", "ci95_low", "ci95_high", "n", "seeds", "missing_seeds")
#: :func:`default_curve`: x, the y candidates (first present wins), the line-splitting fields
CURVE_X = "round"
CURVE_Y = ("test_accuracy", "accuracy", "classification_accuracy")
CURVE_BY = ("method", "stage", "case", "ratio", "snr_db")


@dataclass(frozen=True)
class SeedRun:
    """One seed's results: the folder given, the JSON file read and the seed."""

    seed: int
    folder: Path
    file: Path


def _read_json(path: Path) -> Any:
    """Read JSON; the non-standard NaN / Infinity tokens read as ``None`` (missing)."""
    return json.loads(path.read_text(), parse_constant=lambda _token: None)


def _find_file(folder: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
        found = sorted(folder.glob(f"**/{name}"))
        if len(found) > 1:
            raise ValueError(f"{folder}: several {name} below it ({found}); pass one folder each")
        if found:
            return found[0]
    raise ValueError(f"{folder}: no {' or '.join(names)} in it or below it")


def _seed_of(file: Path) -> int:
    import yaml

    cfg_path = file.parent / "config.yaml"
    if cfg_path.is_file():
        cfg = yaml.safe_load(cfg_path.read_text())
        if isinstance(cfg, dict) and isinstance(cfg.get("seed"), int):
            return int(cfg["seed"])
    data = _read_json(file)
    if isinstance(data, dict) and isinstance(data.get("seed"), int):
        return int(data["seed"])
    raise ValueError(f"{file}: no top-level 'seed' in {cfg_path.name} or in the file; pass seeds")


def find_runs(
    folders: Sequence[str | Path],
    names: Sequence[str] = FILE_NAMES,
    seeds: Sequence[int] | None = None,
) -> list[SeedRun]:
    """Locate each folder's results file and seed (``seeds`` overrides, in folder order).

    Raises
    ------
    ValueError
        If a folder has no (or an ambiguous) results file or no seed, if ``seeds`` has the
        wrong length, or if two folders have the same seed.
    """
    if not folders:
        raise ValueError("folders: need at least one run folder")
    if seeds is not None and len(seeds) != len(folders):
        raise ValueError(f"seeds: {len(seeds)} seeds for {len(folders)} folders")
    runs = []
    for i, folder in enumerate(map(Path, folders)):
        file = _find_file(folder, names)
        seed = int(seeds[i]) if seeds is not None else _seed_of(file)
        runs.append(SeedRun(seed, folder, file))
    taken: dict[int, Path] = {}
    for run in runs:
        if run.seed in taken:
            raise ValueError(f"seed {run.seed} twice: {taken[run.seed]} and {run.folder}")
        taken[run.seed] = run.folder
    return runs


def _row_label(row: Mapping[str, Any], row_keys: Sequence[str]) -> str | None:
    if row_keys and all(k in row for k in row_keys):
        return ",".join(f"{k}={row[k]}" for k in row_keys)
    return None


def flatten(data: Any, row_keys: Sequence[str] = (), prefix: str = "") -> dict[str, float | None]:
    """Numeric leaves of ``data`` by dotted path; ``None``/non-finite leaves map to ``None``.

    Dict keys join with dots; list items use their index, or for a dict item holding every
    ``row_keys`` field the label ``k1=v1,k2=v2`` (those fields are then not metrics).
    Booleans and strings are skipped.
    """
    out: dict[str, float | None] = {}
    if isinstance(data, Mapping):
        for k, v in data.items():
            out.update(flatten(v, row_keys, f"{prefix}{k}."))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            label = _row_label(item, row_keys) if isinstance(item, Mapping) else None
            if label is None:
                out.update(flatten(item, row_keys, f"{prefix}{i}."))
            else:
                rest = {k: v for k, v in item.items() if k not in row_keys}
                out.update(flatten(rest, row_keys, f"{prefix}{label}."))
    elif data is None:
        out[prefix[:-1]] = None
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix[:-1]] = float(data) if math.isfinite(data) else None
    return out


def aggregate(runs: Sequence[SeedRun], row_keys: Sequence[str] = ()) -> dict[str, Any]:
    """The ``aggregate.json`` object for ``runs`` (seeds in ascending order)."""
    runs = sorted(runs, key=lambda r: r.seed)
    flat = [flatten(_read_json(r.file), row_keys) for r in runs]
    keys: list[str] = []
    for f in flat:
        keys.extend(k for k in f if k not in keys)
    metrics: dict[str, Any] = {}
    for key in keys:
        got = [(r.seed, v) for r, f in zip(runs, flat) if (v := f.get(key)) is not None]
        if not got:
            continue
        seeds, values = [s for s, _ in got], [v for _, v in got]
        stats = summarize(values).as_dict()
        missing = [r.seed for r in runs if r.seed not in seeds]
        metrics[key] = {**stats, "seeds": seeds, "values": values, "missing_seeds": missing}
    return {
        "statistic": METHOD,
        "files": sorted({r.file.name for r in runs}),
        "runs": [{"seed": r.seed, "path": str(r.file)} for r in runs],
        "metrics": metrics,
    }


def paired(agg: Mapping[str, Any], key_a: str, key_b: str) -> dict[str, Any]:
    """Paired t and Wilcoxon tests of metric ``key_a`` against ``key_b`` over common seeds."""
    for key in (key_a, key_b):
        if key not in agg["metrics"]:
            raise ValueError(f"paired: no metric {key!r}; known: {sorted(agg['metrics'])}")
    a = dict(zip(agg["metrics"][key_a]["seeds"], agg["metrics"][key_a]["values"]))
    b = dict(zip(agg["metrics"][key_b]["seeds"], agg["metrics"][key_b]["values"]))
    common = sorted(set(a) & set(b))
    xs, ys = [a[s] for s in common], [b[s] for s in common]
    return {
        "a": key_a,
        "b": key_b,
        "seeds": common,
        "t": paired_test(xs, ys, "t").as_dict(),
        "wilcoxon": paired_test(xs, ys, "wilcoxon").as_dict(),
    }


def csv_rows(agg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``aggregate.csv`` rows of ``agg``: one per metric, :data:`CSV_COLUMNS`."""
    rows = []
    for key, m in agg["metrics"].items():
        row = {c: ("" if m[c] is None else m[c]) for c in CSV_COLUMNS[1:6]}
        row["seeds"] = " ".join(map(str, m["seeds"]))
        row["missing_seeds"] = " ".join(map(str, m["missing_seeds"]))
        rows.append({"metric": key, **row})
    return rows


_csv_rows = csv_rows  # the former name (simulations/aggregate_slf_multitask.py uses it)


def default_out_dir(folders: Sequence[str | Path]) -> Path:
    """The common parent of ``folders`` ("next to them")."""
    parents = {Path(f).resolve().parent for f in folders}
    if len(parents) != 1:
        raise ValueError(f"run folders have different parents {sorted(parents)}; pass out_dir")
    return parents.pop()


def write_aggregate(
    folders: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    names: Sequence[str] = FILE_NAMES,
    seeds: Sequence[int] | None = None,
    row_keys: Sequence[str] = (),
    pairs: Sequence[tuple[str, str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Aggregate ``folders`` and write ``aggregate.json`` / ``aggregate.csv`` into ``out_dir``.

    Returns the aggregate object (as written to ``aggregate.json``; ``extra`` entries are added
    to it). Run paths in it are relative to ``out_dir`` (``../`` where needed), so a folder
    holding both can be moved.
    """
    out = Path(out_dir) if out_dir is not None else default_out_dir(folders)
    runs = find_runs(folders, names, seeds)
    agg = aggregate(runs, row_keys)
    for entry in agg["runs"]:
        entry["path"] = os.path.relpath(Path(entry["path"]).resolve(), out.resolve())
    if pairs:
        agg["paired"] = [paired(agg, a, b) for a, b in pairs]
    agg.update(extra or {})
    write_json(out / "aggregate.json", agg)
    write_csv(out / "aggregate.csv", csv_rows(agg), CSV_COLUMNS)
    return agg


def seed_curves(
    runs: Sequence[SeedRun],
    x: str,
    y: str,
    by: Sequence[str] = (),
    where: Mapping[str, Any] | None = None,
) -> dict[str, tuple[list[float], list[list[float]]]]:
    """Per-seed values of ``y`` at each ``x`` from each seed's ``metrics.json`` rows.

    Rows matching ``where`` (field == value) are grouped by their ``by`` fields (the label
    ``"v1, v2"``, or ``y`` without ``by``); the result feeds :func:`flwr_semcom.results.plot_band`.
    Rows lacking ``x`` or a numeric, finite ``y`` are skipped.
    """
    groups: dict[str, dict[float, list[float]]] = {}
    for run in runs:
        for row in _rows(run):
            if any(row.get(k) != v for k, v in (where or {}).items()):
                continue
            xv, yv = row.get(x), row.get(y)
            if not isinstance(xv, (int, float)) or not isinstance(yv, (int, float)):
                continue
            if not math.isfinite(yv):
                continue
            label = ", ".join(str(row.get(k)) for k in by) or y
            groups.setdefault(label, {}).setdefault(float(xv), []).append(float(yv))
    return {label: (sorted(pts), [pts[k] for k in sorted(pts)]) for label, pts in groups.items()}


def _rows(run: SeedRun) -> list[Mapping[str, Any]]:
    try:
        rows = _read_json(_find_file(run.file.parent, ("metrics.json",)))
    except ValueError:
        return []
    return [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []


def default_curve(runs: Sequence[SeedRun]) -> tuple[str, str, list[str]] | None:
    """The learning curve to draw for ``runs``: ``(x, y, by)`` or ``None`` (no such rows).

    From the first seed's ``metrics.json`` rows: x is :data:`CURVE_X`; y the first of
    :data:`CURVE_Y` with a finite number in a row that has x; one line per value of each
    :data:`CURVE_BY` field that takes more than one value in those rows.
    """
    if not runs:
        return None
    rows = [r for r in _rows(runs[0]) if isinstance(r.get(CURVE_X), (int, float))]
    for y in CURVE_Y:
        have = [r for r in rows if _finite(r.get(y))]
        if have:
            by = [k for k in CURVE_BY if len({str(r.get(k)) for r in have if k in r}) > 1]
            return CURVE_X, y, by
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write_curve(
    out: str | Path,
    runs: Sequence[SeedRun],
    x: str,
    y: str,
    by: Sequence[str] = (),
    target: float | None = None,
) -> Path | None:
    """Draw :func:`seed_curves` as ``out/aggregate_<y>.png`` (+ PDF); ``None`` when no row has
    a numeric ``x`` and a finite ``y``."""
    curves = seed_curves(runs, x, y, by)
    if not curves:
        return None
    path = Path(out) / f"aggregate_{y}.png"
    plot_band(path, curves, xlabel=x, ylabel=y, target=target)
    return path


def _curve_spec(
    words: Sequence[str], by: Sequence[str], runs: Sequence[SeedRun]
) -> tuple[str, str, list[str]]:
    if list(words) == ["auto"]:
        spec = default_curve(runs)
        if spec is None:
            raise ValueError(
                f"--curve auto: no metrics.json rows with {CURVE_X!r} and one of {CURVE_Y}"
            )
        return spec
    if len(words) != 2:
        raise ValueError(f"--curve: expected X Y or auto, got {' '.join(words)!r}")
    return words[0], words[1], list(by)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulations.aggregate", description=__doc__)
    p.add_argument("folders", nargs="+", type=Path, help="one results folder per seed")
    p.add_argument("--out", type=Path, default=None, help="default: the folders' common parent")
    p.add_argument("--file", action="append", default=None, help="JSON file name to read")
    p.add_argument("--seeds", default=None, help="comma list, one per folder (else config.yaml)")
    p.add_argument("--row-key", action="append", default=[], help="label list rows by field")
    p.add_argument("--paired", nargs=2, action="append", default=[], metavar=("A", "B"))
    p.add_argument(
        "--curve", nargs="+", metavar="X Y", default=None, help="X Y, or auto (default_curve)"
    )
    p.add_argument("--by", action="append", default=[], help="--curve: one line per value")
    p.add_argument("--target", type=float, default=None, help="--curve: horizontal target line")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        names = tuple(args.file) if args.file else FILE_NAMES
        out = args.out or default_out_dir(args.folders)
        agg = write_aggregate(
            args.folders,
            out,
            names=names,
            seeds=seeds,
            row_keys=args.row_key,
            pairs=[(a, b) for a, b in args.paired],
        )
        if args.curve:
            runs = find_runs(args.folders, names, seeds)
            spec = _curve_spec(args.curve, args.by, runs)
            if write_curve(out, runs, *spec, target=args.target) is None:
                raise ValueError(
                    f"--curve: no metrics.json rows with numeric {spec[0]!r} and {spec[1]!r}"
                )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(agg['metrics'])} metrics over seeds {[r['seed'] for r in agg['runs']]} → {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
