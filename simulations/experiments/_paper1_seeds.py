"""Paper 1 over seeds: the main job's headline with 95 % intervals and paired tests (issue #18).

Usage::

    python -m simulations.experiments._paper1_seeds RUN_DIR [RUN_DIR ...] [--out DIR]

Each ``RUN_DIR`` is one seed of the same paper-1 experiment (a results folder, or a folder
holding exactly one below it, as ``python -m simulations.aggregate`` takes them); its
``metrics.csv`` (schema in docs/paper1.md) is read, the seed from the ``config.yaml`` beside it
(or ``--seeds``). Over the ``n`` seeds (:mod:`flwr_semcom.stats`; mean ± Student-t 95 %
interval ``mean ± t_{0.975, n-1} · s / sqrt(n)``):

- per method, the headline figures: the Stage II test accuracy at the round selected on the
  validation split (``val_accuracy``: the earliest round of highest validation accuracy,
  :func:`~simulations.experiments._paper1_summary.select_round`; no test metric is read to
  select) and at the final round; the selected round and its validation accuracy; and the best
  test accuracy (the maximum over rounds of the *test* accuracy: kept only to compare with the
  paper's figures and older runs, not a selection);
- the target: the mean over seeds of the supervised baseline's final test accuracy, one
  value for every seed;
- per seed and method, the Stage II payload bits to that target, linearly interpolated between
  the rounds' cumulative bits (:func:`flwr_semcom.stats.bits_to_target`; reached in round 1 =
  round 1's bits); ``null`` where a seed never reaches it (``n_reached`` says how many did);
- the DeCUR / supervised ratio of those bits per seed (seeds where both reach the target);
  the round-granular ratio of ``summary.json`` (each seed's own supervised final accuracy as
  its target) beside it for comparison;
- paired tests of DeCUR against each other method over the seeds, on the final accuracy
  (``paired_tests``) and on the test accuracy at the validation-selected round
  (``paired_tests_val_selected``): the paired t-test (primary) and the Wilcoxon signed-rank
  test (with n pairs its smallest two-sided p-value is 2 / 2^n: 0.0625 for 5 seeds, so it
  cannot reach 0.05 with 5 seeds);
- Stage I payload bits per method (the total-bits view: Stage I + Stage II).

Writes ``paper1_seeds.json`` (strict JSON), ``paper1_seeds.csv`` (one row per metric, the
columns of ``aggregate.csv``) and ``paper1_seeds_accuracy.png`` + ``.pdf`` (mean test accuracy
per round with its 95 % band per method, the target dashed) next to the run folders (their
common parent) or into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr_semcom.results import plot_band, write_csv, write_json
from flwr_semcom.stats import bits_to_target, paired_test, summarize
from simulations.aggregate import CSV_COLUMNS, METHOD, SeedRun, default_out_dir, find_runs
from simulations.experiments._paper1_summary import select_round

__all__ = ["SeedCurves", "load_seed", "main", "paired_over_seeds", "report", "write_report"]

REFERENCE = "decur"
BASELINE = "supervised"
PRIMARY_TEST = "paired-t"
DISPLAY = {"decur": "DeCUR", "simclr": "SimCLR", "barlow_twins": "Barlow Twins"}
TEST_NOTE = (
    "primary: paired t-test on the per-seed differences (two-sided, n-1 df); secondary: "
    "Wilcoxon signed-rank (exact, two-sided), whose smallest possible p-value with n pairs is "
    "2/2^n (0.0625 for n = 5): it cannot reach p < 0.05 with 5 seeds"
)
TARGET_NOTE = (
    "mean over seeds of the supervised baseline's final Stage II test accuracy; bits to it are "
    "linearly interpolated between rounds' cumulative Stage II payload bits "
    "(flwr_semcom.stats.bits_to_target), null where a seed never reaches it"
)


@dataclass(frozen=True)
class SeedCurves:
    """One seed's Stage II curves and Stage I bits, per method (in metrics.csv order).

    ``rounds[m]``, ``accuracy[m]`` and ``bits[m]`` are the method's Stage II (``finetune``)
    rows sorted by round: round number, test accuracy and cumulative payload bits;
    ``val_accuracy[m]`` the validation accuracy of those rows (NaN where the run has none).
    ``stage1_bits[m]`` is the largest cumulative ``bits`` of its Stage I (``pretrain``) rows,
    0 for a method without any (the supervised baseline).
    """

    seed: int
    folder: Path
    rounds: dict[str, list[int]]
    accuracy: dict[str, list[float]]
    bits: dict[str, list[float]]
    stage1_bits: dict[str, float]
    val_accuracy: dict[str, list[float]] = field(default_factory=dict)

    def selected(self, method: str) -> int | None:
        """Index of the validation-selected round of ``method`` (None without validation)."""
        vals = self.val_accuracy.get(method, [])
        rows = [{"round": i, "val_accuracy": v} for i, v in enumerate(vals)]
        chosen = select_round(rows)
        return None if chosen is None else chosen[0]


def load_seed(run: SeedRun) -> SeedCurves:
    """Read ``metrics.csv`` of one seed (the file found by :func:`find_runs`)."""
    path = run.file.parent / "metrics.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    stage2: dict[str, list[tuple[int, float, float, float]]] = {}
    stage1: dict[str, float] = {}
    for row in rows:
        method, stage = row["method"], row["stage"]
        bits = float(row["bits"])
        if stage == "pretrain":
            stage1[method] = max(stage1.get(method, 0.0), bits)
        elif stage == "finetune":
            acc = float(row["test_accuracy"])
            if not math.isfinite(acc):
                raise ValueError(f"{path}: {method} round {row['round']}: test_accuracy {acc}")
            val = float(row.get("val_accuracy") or "nan")
            stage2.setdefault(method, []).append((int(row["round"]), acc, bits, val))
    if not stage2:
        raise ValueError(f"{path}: no Stage II (stage=finetune) rows")
    for pts in stage2.values():
        pts.sort()
    return SeedCurves(
        seed=run.seed,
        folder=run.folder,
        rounds={m: [p[0] for p in pts] for m, pts in stage2.items()},
        accuracy={m: [p[1] for p in pts] for m, pts in stage2.items()},
        bits={m: [p[2] for p in pts] for m, pts in stage2.items()},
        stage1_bits={m: stage1.get(m, 0.0) for m in stage2},
        val_accuracy={m: [p[3] for p in pts] for m, pts in stage2.items()},
    )


def _stats(seeds: Sequence[int], values: Sequence[float | None]) -> dict[str, Any]:
    """Summary over the seeds with a value, plus per-seed values and the missing seeds."""
    got = [(s, v) for s, v in zip(seeds, values) if v is not None]
    out: dict[str, Any] = {"mean": None, "std": None, "ci95_low": None, "ci95_high": None}
    if got:
        out = summarize([v for _, v in got]).as_dict()
    out["n"] = len(got)
    out["seeds"] = [s for s, _ in got]
    out["values"] = [v for _, v in got]
    out["missing_seeds"] = [s for s, v in zip(seeds, values) if v is None]
    return out


def _round_bits_to(bits: Sequence[float], acc: Sequence[float], target: float) -> float | None:
    """``summary.json``'s measure: the bits of the first round with accuracy >= target - 1e-9."""
    return next((b for b, a in zip(bits, acc) if a >= target - 1e-9), None)


def _finite(values: Sequence[float], i: int) -> float | None:
    return values[i] if i < len(values) and math.isfinite(values[i]) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def paired_over_seeds(
    seeds: Sequence[int], a: Sequence[float | None], b: Sequence[float | None]
) -> Any:
    """Paired t and Wilcoxon of ``a`` against ``b`` over the seeds where both have a value
    (``t`` and ``wilcoxon`` are ``None`` with fewer than 2 such seeds)."""
    pairs = [(s, x, y) for s, x, y in zip(seeds, a, b) if x is not None and y is not None]
    if len(pairs) < 2:
        return {"seeds": [p[0] for p in pairs], "t": None, "wilcoxon": None}
    xs, ys = [p[1] for p in pairs], [p[2] for p in pairs]
    return {
        "seeds": [p[0] for p in pairs],
        "t": paired_test(xs, ys, "t").as_dict(),
        "wilcoxon": paired_test(xs, ys, "wilcoxon").as_dict(),
    }


def report(curves: Sequence[SeedCurves]) -> dict[str, Any]:
    """The ``paper1_seeds.json`` object for ``curves`` (one per seed; sorted by seed).

    Raises
    ------
    ValueError
        If a seed lacks the supervised baseline, or the seeds differ in their methods.
    """
    curves = sorted(curves, key=lambda c: c.seed)
    seeds = [c.seed for c in curves]
    methods = list(curves[0].accuracy)
    for c in curves:
        if BASELINE not in c.accuracy:
            raise ValueError(f"seed {c.seed} ({c.folder}): no {BASELINE!r} Stage II rows")
        if sorted(c.accuracy) != sorted(methods):
            raise ValueError(f"seed {c.seed}: methods {sorted(c.accuracy)}, not {sorted(methods)}")
    finals = {m: [c.accuracy[m][-1] for c in curves] for m in methods}
    target = float(sum(finals[BASELINE]) / len(curves))
    to_target = {
        m: [bits_to_target(c.bits[m], c.accuracy[m], target) for c in curves] for m in methods
    }
    own_round = {
        m: [_round_bits_to(c.bits[m], c.accuracy[m], c.accuracy[BASELINE][-1]) for c in curves]
        for m in methods
    }
    picks = {m: [c.selected(m) for c in curves] for m in methods}
    at_val = {
        m: [None if i is None else c.accuracy[m][i] for c, i in zip(curves, picks[m])]
        for m in methods
    }
    out_methods: dict[str, Any] = {}
    for m in methods:
        out_methods[m] = {
            "test_accuracy_at_val_selected": _stats(seeds, at_val[m]),
            "final_accuracy": _stats(seeds, finals[m]),
            "val_selected_round": _stats(
                seeds, [None if i is None else c.rounds[m][i] for c, i in zip(curves, picks[m])]
            ),
            "val_accuracy_at_selected": _stats(
                seeds,
                [None if i is None else c.val_accuracy[m][i] for c, i in zip(curves, picks[m])],
            ),
            "best_accuracy": _stats(seeds, [max(c.accuracy[m]) for c in curves]),
            "stage2_bits_to_target": {
                **_stats(seeds, to_target[m]),
                "n_reached": sum(v is not None for v in to_target[m]),
            },
            "stage2_bits": _stats(seeds, [c.bits[m][-1] for c in curves]),
            "stage1_bits": _stats(seeds, [c.stage1_bits[m] for c in curves]),
            "total_bits": _stats(seeds, [c.stage1_bits[m] + c.bits[m][-1] for c in curves]),
        }
    ratio: dict[str, Any] = {}
    if REFERENCE in methods:
        ratio = {
            "interpolated_common_target": _stats(
                seeds, [_ratio(a, b) for a, b in zip(to_target[REFERENCE], to_target[BASELINE])]
            ),
            "round_granular_own_target": _stats(
                seeds, [_ratio(a, b) for a, b in zip(own_round[REFERENCE], own_round[BASELINE])]
            ),
        }
    tests = {
        metric: [
            {
                "a": REFERENCE,
                "b": m,
                "metric": metric,
                **paired_over_seeds(seeds, v[REFERENCE], v[m]),
            }
            for m in methods
            if REFERENCE in methods and m != REFERENCE
        ]
        for metric, v in (("final_accuracy", finals), ("test_accuracy_at_val_selected", at_val))
    }
    per_round = {
        m: {
            "rounds": curves[0].rounds[m],
            "test_accuracy": [
                _stats(
                    seeds, [c.accuracy[m][i] if i < len(c.accuracy[m]) else None for c in curves]
                )
                for i in range(len(curves[0].rounds[m]))
            ],
            "val_accuracy": [
                _stats(seeds, [_finite(c.val_accuracy.get(m, []), i) for c in curves])
                for i in range(len(curves[0].rounds[m]))
            ],
        }
        for m in methods
    }
    return {
        "statistic": METHOD,
        "n_seeds": len(seeds),
        "seeds": seeds,
        "runs": [{"seed": c.seed, "path": str(c.folder)} for c in curves],
        "target_accuracy": target,
        "target_definition": TARGET_NOTE,
        "selection_note": "test_accuracy_at_val_selected: test accuracy at each seed's round of "
        "highest validation accuracy (earliest on ties; data.val_fraction); the headline with "
        "final_accuracy",
        "best_accuracy_note": "maximum over rounds of the test accuracy: for comparison with "
        "the paper only (selected on the test set)",
        "primary_test": PRIMARY_TEST,
        "test_note": TEST_NOTE,
        "methods": out_methods,
        "decur_to_supervised_bits_ratio": ratio,
        "paired_tests": tests["final_accuracy"],
        "paired_tests_val_selected": tests["test_accuracy_at_val_selected"],
        "per_round": per_round,
    }


def _csv_rows(rep: Mapping[str, Any]) -> list[dict[str, Any]]:
    def row(name: str, s: Mapping[str, Any]) -> dict[str, Any]:
        cells = {c: ("" if s.get(c) is None else s[c]) for c in CSV_COLUMNS[1:6]}
        cells["seeds"] = " ".join(map(str, s["seeds"]))
        cells["missing_seeds"] = " ".join(map(str, s["missing_seeds"]))
        return {"metric": name, **cells}

    rows = [row(f"methods.{m}.{k}", s) for m, d in rep["methods"].items() for k, s in d.items()]
    rows += [
        row(f"decur_to_supervised_bits_ratio.{k}", s)
        for k, s in rep["decur_to_supervised_bits_ratio"].items()
    ]
    return rows


def write_report(
    folders: Sequence[str | Path],
    out_dir: str | Path | None = None,
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Read the seeds' folders, write the JSON, CSV and figure into ``out_dir``; return the JSON."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(folders)
    runs = find_runs(folders, ("metrics.csv",), seeds)
    rep = report([load_seed(r) for r in runs])
    for entry in rep["runs"]:
        path = Path(entry["path"]).resolve()
        if path.is_relative_to(out.resolve()):
            entry["path"] = str(path.relative_to(out.resolve()))
    write_json(out / "paper1_seeds.json", rep)
    write_csv(out / "paper1_seeds.csv", _csv_rows(rep), CSV_COLUMNS)
    series = {
        DISPLAY.get(m, m): (
            [float(r) for r in pr["rounds"]],
            [s["values"] for s in pr["test_accuracy"]],
        )
        for m, pr in rep["per_round"].items()
    }
    plot_band(
        out / "paper1_seeds_accuracy.png",
        series,
        xlabel="Stage II round",
        ylabel="test accuracy",
        title=f"paper 1 main job, {rep['n_seeds']} seeds (mean, 95 % CI)",
        target=rep["target_accuracy"],
        target_label="target (supervised final, mean)",
    )
    return rep


def _fmt(s: Mapping[str, Any], spec: str = ".3f") -> str:
    if s["mean"] is None:
        return "—"
    if s["ci95_low"] is None:
        return format(s["mean"], spec)
    return f"{s['mean']:{spec}} [{s['ci95_low']:{spec}}, {s['ci95_high']:{spec}}]"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulations.experiments._paper1_seeds")
    p.add_argument("folders", nargs="+", type=Path, help="one paper-1 results folder per seed")
    p.add_argument("--out", type=Path, default=None, help="default: the folders' common parent")
    p.add_argument("--seeds", default=None, help="comma list, one per folder (else config.yaml)")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        rep = write_report(args.folders, args.out, seeds)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"seeds {rep['seeds']}; target {rep['target_accuracy']:.4f}")
    for m, d in rep["methods"].items():
        b = d["stage2_bits_to_target"]
        print(
            f"{m:<14} test@val-selected {_fmt(d['test_accuracy_at_val_selected'])}  "
            f"final {_fmt(d['final_accuracy'])}  "
            f"S-II bits→target {_fmt(b, '.3g')} ({b['n_reached']}/{rep['n_seeds']} reached)"
        )
    for k, s in rep["decur_to_supervised_bits_ratio"].items():
        print(f"DeCUR/supervised bits ratio ({k}): {_fmt(s)}")
    for t in rep["paired_tests"] + rep["paired_tests_val_selected"]:
        if t["t"] is not None:
            print(
                f"{t['a']} - {t['b']} {t['metric']}: {t['t']['mean_diff']:+.4f}, "
                f"paired t p={t['t']['p_value']:.4f}, Wilcoxon p={t['wilcoxon']['p_value']:.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
