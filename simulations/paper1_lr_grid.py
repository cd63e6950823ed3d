"""Paper 1 Stage II learning rate chosen on validation, and the seed comparison at it (issue #18).

Usage::

    python -m simulations.paper1_lr_grid \\
        --grid 0.025=outputs/lr_grid/lr0.025 0.05=outputs/paper1_seeds5/seed0 \\
               0.1=outputs/lr_grid/lr0.1 0.2=outputs/lr_grid/lr0.2 \\
        --base 'outputs/paper1_seeds5/seed{seed}' --base-lr 0.05 \\
        --chosen 'outputs/lr_chosen/{method}/seed{seed}' --seeds 0 1 2 3 4 \\
        --out docs/results/paper1_lr_grid

``--grid LR=DIR``: one main-job run per learning rate (``strategy.lr``), all at the grid's
seed; ``DIR`` holds one ``main/<stamp>/summary.json`` (several are an error). Per method the
learning rate is the one whose run reaches the highest ``val_accuracy_at_selected`` (the
validation maximum over Stage II rounds; on a tie the smaller learning rate): the choice reads
no test metric (:func:`choose_lr`).

The seed comparison takes each method at its chosen learning rate: from the ``--base`` runs
(``{seed}`` filled in) when it is ``--base-lr``, otherwise from ``--chosen`` runs
(``{method}`` and ``{seed}`` filled in; one method per run, ``experiment.methods=[m]``, which
gives that method's numbers of a full run: every method draws from its own RNG streams) and,
for the grid's seed, from the grid run. ``--keep METHOD=LR`` overrides a choice (said in the
output). Writes ``lr_grid.json``, ``chosen_lr_seeds.json`` (per method the test accuracy at
the val-selected round and at the final round, mean and Student-t 95 % interval over seeds;
DeCUR minus each other method, paired t and Wilcoxon over the seeds both have) and
``table.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr_semcom.accounting import atomic_write
from flwr_semcom.stats import summarize
from simulations.experiments._paper1_seeds import paired_over_seeds

__all__ = ["choose_lr", "main"]

METHODS = ("decur", "simclr", "barlow_twins", "supervised")
KEYS = ("test_accuracy_at_val_selected", "final_accuracy")


def choose_lr(per_lr: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The learning rate (a key of ``per_lr``) with the highest ``val_accuracy_at_selected``
    among the runs whose ``status`` is ``ok``; on a tie the smaller learning rate. ``None``
    when no run has a validation accuracy. Reads no test metric."""
    ok = {
        lr: float(r["val_accuracy_at_selected"])
        for lr, r in per_lr.items()
        if r.get("status") == "ok" and r.get("val_accuracy_at_selected") is not None
    }
    if not ok:
        return None
    return max(ok, key=lambda lr: (ok[lr], -float(lr)))


def _summary(folder: Path) -> dict[str, Any] | None:
    """The one ``main/*/summary.json`` below ``folder`` (None if there is none); several are an
    error: which run is meant is not guessed (e.g. the newest)."""
    found = sorted(folder.glob("main/*/summary.json"))
    if len(found) > 1:
        names = ", ".join(str(f.parent.name) for f in found)
        raise SystemExit(
            f"error: {folder}: several runs ({names}); keep one main/<stamp> per folder"
        )
    return json.loads(found[0].read_text()) if found else None


def _pair(value: str, flag: str) -> tuple[str, str]:
    key, sep, rest = value.partition("=")
    if not sep or not key or not rest:
        raise SystemExit(f"error: {flag}: expected KEY=VALUE, got {value!r}")
    return key, rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", nargs="+", required=True, metavar="LR=DIR")
    parser.add_argument("--base", required=True, help="per-seed runs at --base-lr, with {seed}")
    parser.add_argument("--base-lr", default="0.05")
    parser.add_argument("--chosen", required=True, help="per-seed one-method runs, {method} {seed}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--grid-seed", type=int, default=0)
    parser.add_argument("--keep", nargs="*", default=[], metavar="METHOD=LR")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    grid: dict[str, dict[str, Any]] = {}
    for item in args.grid:
        lr, folder = _pair(item, "--grid")
        summary = _summary(Path(folder))
        if summary is None:
            raise SystemExit(f"error: --grid {item}: no main/*/summary.json below {folder}")
        grid[lr] = {"folder": folder, "summary": summary}
    per_method: dict[str, dict[str, Any]] = {}
    for m in METHODS:
        per_lr = {
            lr: {
                k: g["summary"]["methods"][m].get(k)
                for k in ("status", "val_selected_round", "val_accuracy_at_selected", *KEYS)
            }
            for lr, g in grid.items()
            if m in g["summary"]["methods"]
        }
        per_method[m] = {"per_lr": per_lr, "chosen_lr": choose_lr(per_lr)}
    kept = dict(_pair(k, "--keep") for k in args.keep)
    used = {m: kept.get(m, per_method[m]["chosen_lr"]) for m in METHODS}

    def run_of(m: str, seed: int) -> dict[str, Any] | None:
        lr = used[m]
        if lr == args.base_lr:
            s = _summary(Path(args.base.format(seed=seed)))
        elif seed == args.grid_seed and lr in grid:
            s = grid[lr]["summary"]
        else:
            s = _summary(Path(args.chosen.format(method=m, seed=seed)))
        return None if s is None or m not in s["methods"] else dict(s["methods"][m])

    runs = {m: {s: r for s in args.seeds if (r := run_of(m, s)) is not None} for m in METHODS}
    seeds_out: dict[str, Any] = {
        "what": "each method at its Stage II lr chosen on validation (lr_grid.json); test accuracy "
        "at the val-selected round and at the final round over seeds (Student t); DeCUR minus "
        "each other method, paired over the seeds both have",
        "validation_choice": {m: per_method[m]["chosen_lr"] for m in METHODS},
        "lr_used": used,
        "kept": kept,
        "per_method": {},
        "paired": {},
    }
    for m in METHODS:
        entry: dict[str, Any] = {"seeds": sorted(runs[m])}
        for key in KEYS:
            values = [float(runs[m][s][key]) for s in sorted(runs[m])]
            entry[key] = {"values": values, **summarize(values).as_dict()} if values else None
        seeds_out["per_method"][m] = entry
    for m in METHODS[1:]:
        common = sorted(set(runs["decur"]) & set(runs[m]))
        if len(common) < 2:
            continue
        for key in KEYS:
            a = [float(runs["decur"][s][key]) for s in common]
            b = [float(runs[m][s][key]) for s in common]
            seeds_out["paired"][f"decur-{m}/{key}"] = paired_over_seeds(common, a, b)
    args.out.mkdir(parents=True, exist_ok=True)
    grid_out = {
        "what": "paper 1 main job, one seed, Stage II lr grid (cosine to 0); per method the lr "
        "whose run has the highest validation maximum (tie: the smaller lr); test accuracy "
        "reported, never used to choose",
        "grid_seed": args.grid_seed,
        "runs": {lr: g["folder"] for lr, g in grid.items()},
        "wall_time_s": {lr: g["summary"].get("wall_time_s") for lr, g in grid.items()},
        "per_method": per_method,
    }
    for name, obj in (("lr_grid.json", grid_out), ("chosen_lr_seeds.json", seeds_out)):
        with atomic_write(args.out / name) as fh:
            json.dump(obj, fh, indent=1, allow_nan=False)
            fh.write("\n")
    lines = _table(grid, per_method, seeds_out)
    with atomic_write(args.out / "table.md") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _fmt(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return "–"
    if entry["ci95_high"] is None:
        return f"{entry['mean']:.3f} (n = {entry['n']})"
    return f"{entry['mean']:.3f} ± {entry['ci95_high'] - entry['mean']:.3f} (n = {entry['n']})"


def _table(
    grid: Mapping[str, Any], per_method: Mapping[str, Any], seeds_out: Mapping[str, Any]
) -> list[str]:
    lrs = list(grid)
    lines = [
        "Validation maximum (its round) / test accuracy at that round / final test accuracy:",
        "",
        "| method | " + " | ".join(f"lr {lr}" for lr in lrs) + " | chosen on validation |",
        "|---|" + "---|" * (len(lrs) + 1),
    ]
    for m, pm in per_method.items():
        cells = []
        for lr in lrs:
            r = pm["per_lr"].get(lr)
            if r is None or r["val_accuracy_at_selected"] is None:
                cells.append("–" if r is None else str(r["status"]))
            else:
                cells.append(
                    f"{r['val_accuracy_at_selected']:.3f} ({r['val_selected_round']}) / "
                    f"{r['test_accuracy_at_val_selected']:.3f} / {r['final_accuracy']:.3f}"
                )
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {pm['chosen_lr']} |")
    lines += [
        "",
        "Each method at the lr used (mean ± 95 % half-width over seeds):",
        "",
        "| method | lr used | test accuracy at the val-selected round | final test accuracy |",
        "|---|---|---|---|",
    ]
    for m, e in seeds_out["per_method"].items():
        lines.append(
            f"| {m} | {seeds_out['lr_used'][m]} | {_fmt(e[KEYS[0]])} | {_fmt(e[KEYS[1]])} |"
        )
    lines += [
        "",
        "| DeCUR − | on | mean difference [95 % CI] | paired t | Wilcoxon |",
        "|---|---|---|---|---|",
    ]
    for label, p in seeds_out["paired"].items():
        other, key = label.split("/")
        t, w = p["t"], p["wilcoxon"]
        lines.append(
            f"| {other.removeprefix('decur-')} | {key} | {t['mean_diff']:+.3f} "
            f"[{t['ci95_low']:+.3f}, {t['ci95_high']:+.3f}] | t = {t['statistic']:.2f}, "
            f"p = {t['p_value']:.3f} | p = {w['p_value']:.4f} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
