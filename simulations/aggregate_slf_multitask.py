"""Seed aggregates of paper 2 (``slf_table1``) and paper 3 (``multitask``), issue #18.

Usage::

    python -m simulations.aggregate_slf_multitask slf RUN_DIR [RUN_DIR ...] --out DIR
    python -m simulations.aggregate_slf_multitask multitask RUN_DIR [RUN_DIR ...] --out DIR

Each ``RUN_DIR`` is one seed's results folder (or a folder holding exactly one below it); the
seed comes from its ``config.yaml`` (:func:`simulations.aggregate.find_runs`). Writes into
``DIR``: ``aggregate.json`` / ``aggregate.csv`` in the schema of :mod:`simulations.aggregate`
(per metric ``mean``, ``std``, ``ci95_low``, ``ci95_high``: Student t over seeds, ``n``,
``seeds``, ``values``, ``missing_seeds``), a ``paired`` list (paired t-test and Wilcoxon
signed-rank test per comparison, and the Holm-adjusted paired-t p-value over the family of
that experiment's comparisons), ``table.md`` (mean ± 95 % half-width) and figures with 95 %
bands (PNG + PDF).

Metric keys:

- ``slf``: ``<case>/<method>/<column>`` from each seed's ``metrics.json`` rows of the Table I
  points, ``method`` = ``misaligned``, ``fedavg`` or ``slf_n<n>``; comparisons: every SLF
  ``n`` against FedAvg on ``accuracy`` and ``mse`` within a case.
- ``multitask``: ``<method>/R=<R>/snr=<dB>/<column>`` (``R`` as ``1:12``) from
  ``summary.json``'s ``final`` rows (last round) and
  ``gain/<baseline>/R=<R>/snr=<dB>/<column>`` from its ``gains`` rows (the mean over seeds
  of each seed's relative gain); comparisons: GAI against each baseline on each task metric
  at each (R, SNR).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr_semcom.results import plot_band, write_csv, write_json
from flwr_semcom.stats import paired_test, summarize
from simulations.aggregate import CSV_COLUMNS, METHOD, SeedRun, _csv_rows, find_runs

SLF_COLUMNS = (
    "accuracy",
    "mse",
    "val_accuracy",
    "val_mse",
    "upload_bytes",
    "download_bytes",
    "unfrozen_params",
    "flops",
    "recovery_time_s",
    "finetune_wall_s",
    "wall_time_s",
)
MT_COLUMNS = (
    "classification_accuracy",
    "depth_rmse_m",
    "val_classification_accuracy",
    "val_depth_rmse_m",
)
HIGHER_IS_BETTER = {"accuracy": True, "mse": False, "classification_accuracy": True,
                    "depth_rmse_m": False}  # fmt: skip


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _read(path: Path) -> Any:
    return json.loads(path.read_text(), parse_constant=lambda _t: None)


def slf_flat(run: SeedRun) -> dict[str, float | None]:
    """``<case>/<method>/<column>`` of one seed's Table I rows (``metrics.json``)."""
    out: dict[str, float | None] = {}
    for row in _read(run.file):
        if not row.get("table"):
            continue
        method = row["method"] if row["method"] != "slf" else f"slf_n{int(row['n'])}"
        for col in SLF_COLUMNS:
            if col in row:
                out[f"{row['case']}/{method}/{col}"] = _num(row[col])
    summary = run.file.parent / "summary.json"
    if summary.is_file():
        out["sweep_wall_time_s"] = _num(_read(summary).get("sweep_wall_time_s"))
    return out


def multitask_flat(run: SeedRun) -> dict[str, float | None]:
    """Final (last-round) metrics and gains of one seed (``summary.json``)."""
    data = _read(run.file)
    out: dict[str, float | None] = {"wall_time_s": _num(data.get("wall_time_s"))}
    for row in data["final"]:
        key = f"{row['method']}/R={_ratio(row['ratio'])}/snr={float(row['snr_db']):g}"
        for col in MT_COLUMNS:
            if col in row:
                out[f"{key}/{col}"] = _num(row[col])
    for g in data["gains"]:
        key = f"gain/{g['baseline']}/R={_ratio(g['ratio'])}/snr={float(g['snr_db']):g}"
        for col, v in g.items():
            if col.startswith("gain_"):
                out[f"{key}/{col}"] = _num(v)
    return out


def _ratio(r: Any) -> str:
    from flwr_semcom.multitask.spec import ratio_label

    return ratio_label(float(r)).replace("/", ":")  # "1:12": keys split on "/"


NAMES = {"gai": "GAI", "gai_w": "GAI-w", "separate": "separate links"}


def _ratio_value(r: str) -> float:
    """``"R=1:12"`` → 1/12."""
    num, den = r[2:].split(":")
    return float(num) / float(den)


def _shown(r: str) -> str:
    """``"R=1:12"`` → ``"1/12"``."""
    return r[2:].replace(":", "/")


def summarize_flat(
    runs: Sequence[SeedRun], flat: Sequence[Mapping[str, float | None]]
) -> dict[str, Any]:
    """Per key: mean, std, Student-t 95 % interval over the seeds with a value."""
    keys: list[str] = []
    for f in flat:
        keys.extend(k for k in f if k not in keys)
    metrics: dict[str, Any] = {}
    for key in keys:
        got = [(r.seed, v) for r, f in zip(runs, flat) if (v := f.get(key)) is not None]
        if got:
            seeds, values = [s for s, _ in got], [v for _, v in got]
            missing = [r.seed for r in runs if r.seed not in seeds]
            metrics[key] = {
                **summarize(values).as_dict(),
                "seeds": seeds,
                "values": values,
                "missing_seeds": missing,
            }
    return metrics


def compare(metrics: Mapping[str, Any], a: str, b: str, label: str = "") -> dict[str, Any] | None:
    """Paired t and Wilcoxon of ``a`` against ``b`` over their common seeds (``None`` when a
    key is absent or the two are identical in every seed, e.g. deterministic bytes)."""
    if a not in metrics or b not in metrics:
        return None
    va = dict(zip(metrics[a]["seeds"], metrics[a]["values"]))
    vb = dict(zip(metrics[b]["seeds"], metrics[b]["values"]))
    common = sorted(set(va) & set(vb))
    if len(common) < 2:
        return None
    xs, ys = [va[s] for s in common], [vb[s] for s in common]
    return {
        "label": label or f"{a} − {b}",
        "a": a,
        "b": b,
        "seeds": common,
        "t": paired_test(xs, ys, "t").as_dict(),
        "wilcoxon": paired_test(xs, ys, "wilcoxon").as_dict(),
    }


def holm(pairs: list[dict[str, Any]], alpha: float = 0.05) -> None:
    """Add ``p_holm`` (Holm-adjusted paired-t p-value over ``pairs``) and ``significant``
    (``p_holm < alpha``) to each comparison, in place."""
    order = sorted(range(len(pairs)), key=lambda i: pairs[i]["t"]["p_value"])
    running = 0.0
    m = len(pairs)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pairs[i]["t"]["p_value"]))
        pairs[i]["p_holm"] = running
        pairs[i]["significant"] = running < alpha


def pm(metrics: Mapping[str, Any], key: str, scale: float = 1.0, digits: int = 3) -> str:
    """``mean ± half-width`` of the 95 % interval (``–`` when absent)."""
    m = metrics.get(key)
    if m is None:
        return "–"
    mean = m["mean"] * scale
    if m["ci95_high"] is None:
        return f"{mean:.{digits}f}"
    half = (m["ci95_high"] - m["mean"]) * scale
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _write(out: Path, runs: Sequence[SeedRun], metrics: Any, pairs: list[Any]) -> dict[str, Any]:
    agg = {
        "statistic": METHOD,
        "paired_tests": "paired t-test (two-sided, n - 1 df) and Wilcoxon signed-rank over "
        "seeds; p_holm: Holm-adjusted paired-t p over this experiment's comparisons; "
        "significant: p_holm < 0.05",
        "runs": [{"seed": r.seed, "path": str(r.file)} for r in runs],
        "metrics": metrics,
        "paired": pairs,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "aggregate.json", agg)
    write_csv(out / "aggregate.csv", _csv_rows(agg), CSV_COLUMNS)
    return agg


def _pair_line(p: Mapping[str, Any], scale: float, digits: int) -> str:
    t, w = p["t"], p["wilcoxon"]
    d = f"{t['mean_diff'] * scale:+.{digits}f} [{t['ci95_low'] * scale:+.{digits}f}, "
    d += f"{t['ci95_high'] * scale:+.{digits}f}]"
    sig = "**yes**" if p["significant"] else "no"
    return (
        f"| {p['label']} | {d} | {t['p_value']:.3g} | {p['p_holm']:.3g} | "
        f"{w['p_value']:.3g} | {sig} |"
    )


PAIR_HEAD = (
    "| comparison (a − b) | mean difference [95 % CI] | paired t p | Holm p | Wilcoxon p | "
    "significant (Holm p < 0.05) |\n|---|---|---|---|---|---|"
)


def aggregate_slf(folders: Sequence[str | Path], out: Path) -> dict[str, Any]:
    runs = sorted(find_runs(folders, ("metrics.json",)), key=lambda r: r.seed)
    metrics = summarize_flat(runs, [slf_flat(r) for r in runs])
    cases = sorted({k.split("/")[0] for k in metrics if "/" in k})
    ns = sorted({int(k.split("/")[1][5:]) for k in metrics if "/slf_n" in k})
    pairs = [
        p
        for case in cases
        for col in ("accuracy", "mse")
        for n in ns
        if (
            p := compare(
                metrics,
                f"{case}/slf_n{n}/{col}",
                f"{case}/fedavg/{col}",
                f"{case}: SLF n = {n} − FedAvg, {col}",
            )
        )
    ]
    holm(pairs)
    agg = _write(out, runs, metrics, pairs)
    lines = [f"Seeds {[r.seed for r in runs]}; mean ± 95 % half-width (Student t).", ""]
    spec = (
        ("Accuracy (%)", "accuracy", 100.0, 2),
        ("Validation accuracy (%)", "val_accuracy", 100.0, 2),
        ("MSE", "mse", 1.0, 4),
        ("Validation MSE", "val_mse", 1.0, 4),
        ("Upload (MB)", "upload_bytes", 1e-6, 3),
        ("Recovery time (s)", "recovery_time_s", 1.0, 3),
        ("Wall time here (s)", "wall_time_s", 1.0, 1),
    )
    for case in cases:
        methods = [f"slf_n{n}" for n in ns] + ["fedavg"]
        lines += [f"**{case}**; misaligned accuracy "
                  f"{pm(metrics, f'{case}/misaligned/accuracy', 100.0, 2)} %", "",
                  "| | " + " | ".join(f"n = {n}" for n in ns) + " | FedAvg |",
                  "|---" * (len(methods) + 1) + "|"]  # fmt: skip
        for label, col, scale, digits in spec:
            cells = [pm(metrics, f"{case}/{m}/{col}", scale, digits) for m in methods]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        for col, scale, label in (("accuracy", 100.0, "accuracy (%)"), ("mse", 1.0, "MSE")):
            series = {
                "SLF": (ns, [metrics[f"{case}/slf_n{n}/{col}"]["values"] for n in ns]),
                "SLF, validation": (
                    ns,
                    [
                        metrics.get(f"{case}/slf_n{n}/val_{col}", {"values": []})["values"]
                        for n in ns
                    ],
                ),  # fmt: skip
                "FedAvg (4 rounds; no n)": (
                    ns,
                    [metrics[f"{case}/fedavg/{col}"]["values"]] * len(ns),
                ),
            }
            series = {
                k: (x, [[v * scale for v in vs] for vs in ys]) for k, (x, ys) in series.items()
            }
            plot_band(out / f"{case}_{col}_vs_n.png", series, xlabel="frozen layers n",
                      ylabel=label, title=f"{case} case, mean over seeds, 95 % band")  # fmt: skip
    lines += ["Paired comparisons (accuracy as a fraction):", "", PAIR_HEAD]
    lines += [_pair_line(p, 1.0, 4) for p in pairs]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    return agg


def aggregate_multitask(folders: Sequence[str | Path], out: Path) -> dict[str, Any]:
    runs = sorted(find_runs(folders, ("summary.json",)), key=lambda r: r.seed)
    metrics = summarize_flat(runs, [multitask_flat(r) for r in runs])
    cells = sorted(
        {tuple(k.split("/")[1:3]) for k in metrics if k.startswith("gai/")},
        key=lambda c: (-_ratio_value(c[0]), float(c[1][4:])),
    )
    pairs = [
        p
        for base in ("separate", "gai_w")
        for r, snr in cells
        for col in ("classification_accuracy", "depth_rmse_m")
        if (
            p := compare(
                metrics,
                f"gai/{r}/{snr}/{col}",
                f"{base}/{r}/{snr}/{col}",
                f"GAI − {NAMES[base]}, R = {_shown(r)}, {snr[4:]} dB, {col}",
            )
        )
    ]
    holm(pairs)
    agg = _write(out, runs, metrics, pairs)
    lines = [f"Seeds {[r.seed for r in runs]}; last round; mean ± 95 % half-width.", "",
             "| R | SNR (dB) | method | accuracy ↑ | depth RMSE (m) ↓ | val accuracy | "
             "val depth RMSE (m) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r, snr in cells:
        for m, name in NAMES.items():
            k = f"{m}/{r}/{snr}"
            vals = [pm(metrics, f"{k}/{c}", 1.0, 4) for c in MT_COLUMNS]
            lines.append(f"| {_shown(r)} | {snr[4:]} | {name} | " + " | ".join(vals) + " |")
    lines += ["", "GAI's relative gain (%, positive = GAI better):", "",
              "| R | SNR (dB) | GAI vs | accuracy gain | depth gain | mean gain |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for base in ("separate", "gai_w"):
        for r, snr in cells:
            k = f"gain/{base}/{r}/{snr}"
            vals = [pm(metrics, f"{k}/gain_{t}_pct", 1.0, 2)
                    for t in ("classification", "depth", "mean")]  # fmt: skip
            lines.append(f"| {_shown(r)} | {snr[4:]} | {NAMES[base]} | " + " | ".join(vals) + " |")
    lines += ["", "Paired comparisons (GAI − baseline; accuracy as a fraction, RMSE in m):", "",
              PAIR_HEAD] + [_pair_line(p, 1.0, 4) for p in pairs]  # fmt: skip
    (out / "table.md").write_text("\n".join(lines) + "\n")
    ratios = sorted({r for r, _ in cells})
    snrs = sorted({float(s[4:]) for _, s in cells})
    for col, label in (("classification_accuracy", "accuracy"), ("depth_rmse_m", "depth RMSE (m)")):
        series = {
            f"{NAMES[m]}, R = {_shown(r)}": (
                snrs,
                [metrics[f"{m}/{r}/snr={s:g}/{col}"]["values"] for s in snrs],
            )
            for m in NAMES
            for r in ratios
        }
        plot_band(out / f"{col}_vs_snr.png", series, xlabel="SNR (dB)", ylabel=label,
                  title="last round, mean over seeds, 95 % band")  # fmt: skip
    series = {
        f"vs {NAMES[b]}, R = {_shown(r)}": (
            snrs,
            [metrics[f"gain/{b}/{r}/snr={s:g}/gain_mean_pct"]["values"] for s in snrs],
        )
        for b in ("separate", "gai_w")
        for r in ratios
    }
    plot_band(out / "gain_mean_pct_vs_snr.png", series, xlabel="SNR (dB)",
              ylabel="GAI's mean relative gain (%)", title="mean over seeds, 95 % band",
              target=0.0, target_label="no gain")  # fmt: skip
    return agg


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulations.aggregate_slf_multitask")
    p.add_argument("experiment", choices=("slf", "multitask"))
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    fn = aggregate_slf if args.experiment == "slf" else aggregate_multitask
    try:
        agg = fn(args.folders, args.out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(agg['metrics'])} metrics, {len(agg['paired'])} comparisons → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
