"""Paper 1's main-job Stage II at S batches per message against exact S = 1, paired by seed.

Reads the one-method main-job runs made with (for method M and seed N)::

    semcom-run seed=N experiment.methods=[M] strategy.steps_per_message=8 \\
        strategy.schedule=replay [more overrides] paths.output_dir=RUNS/M/seedN

and compares each method's ``final_accuracy`` and ``test_accuracy_at_val_selected`` with the
same seeds' exact S = 1 runs of ``docs/results/paper1_seeds/paper1_seeds.json`` (a one-method
run gives that method's numbers of a full run): per seed, mean, Student-t 95 % interval
and the paired t-test of exact - this (:mod:`flwr_semcom.stats`). Prints the JSON block;
``--into FILE --key KEY`` also stores it under ``KEY`` of that JSON file.

Usage::

    python benchmarks/stage2_s8.py outputs/s8_group_end --methods supervised decur \\
        --label "replay + group_end" --into benchmarks/results/split_schedule.json \\
        --key main_job_stage2_s8_group_end
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flwr_semcom.accounting import atomic_write  # noqa: E402
from flwr_semcom.stats import paired_test, summarize  # noqa: E402

EXACT = ROOT / "docs" / "results" / "paper1_seeds" / "paper1_seeds.json"
METRICS = ("final_accuracy", "test_accuracy_at_val_selected")


def read_runs(runs: Path, method: str) -> dict[int, dict[str, Any]]:
    """seed → the method's summary entry, from ``runs/<method>/seed<N>/**/summary.json``
    (exactly one per seed folder, else an error naming it)."""
    out: dict[int, dict[str, Any]] = {}
    for folder in sorted((runs / method).glob("seed*")):
        files = sorted(folder.rglob("summary.json"))
        if len(files) != 1:
            raise SystemExit(f"{folder}: expected one summary.json, found {len(files)}")
        entry = json.loads(files[0].read_text())["methods"][method]
        if entry.get("status", "ok") != "ok":
            raise SystemExit(f"{files[0]}: {method} status {entry.get('status')!r}")
        out[int(folder.name.removeprefix("seed"))] = entry
    if not out:
        raise SystemExit(f"{runs / method}: no seed folders")
    return out


def compare(runs: Path, method: str, exact: dict[str, Any]) -> dict[str, Any]:
    """The block of one method: per metric the exact S = 1 and this run's values, the gap."""
    mine = read_runs(runs, method)
    block: dict[str, Any] = {"seeds": sorted(mine)}
    for metric in METRICS:
        ref = exact["methods"][method][metric]
        by_seed = dict(zip(ref["seeds"], ref["values"], strict=True))
        missing = [s for s in mine if s not in by_seed]
        if missing:
            raise SystemExit(f"{method}: no exact S = 1 value of seeds {missing} in {EXACT}")
        a = [float(by_seed[s]) for s in sorted(mine)]
        b = [float(mine[s][metric]) for s in sorted(mine)]
        block[metric] = {
            "exact_s1": {"values": a, **summarize(a).as_dict()},
            "this": {"values": b, **summarize(b).as_dict()},
            "gap_paired_t": paired_test(a, b).as_dict(),
        }
    return block


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="folder with <method>/seed<N>/ run folders")
    p.add_argument("--methods", nargs="+", default=["supervised"])
    p.add_argument("--label", default="", help="what the runs are (stored with the block)")
    p.add_argument("--command", default="", help="how the runs were made (stored)")
    p.add_argument("--into", type=Path, default=None, help="JSON file to store the block in")
    p.add_argument("--key", default=None, help="key of the block in --into")
    p.add_argument(
        "--merge",
        action="store_true",
        help="add these methods to the block already under --key (their runs and --command "
        "kept; a method already there is refused)",
    )
    args = p.parse_args(argv)
    if (args.into is None) != (args.key is None):
        p.error("--into and --key go together")
    if args.merge and args.into is None:
        p.error("--merge needs --into and --key")
    exact = json.loads(EXACT.read_text())
    block: dict[str, Any] = {
        "label": args.label,
        "command": args.command,
        "exact_s1": str(EXACT.relative_to(ROOT)),
    }
    data = json.loads(args.into.read_text()) if args.into and args.into.exists() else {}
    if args.merge:
        old = data.get(args.key)
        if not isinstance(old, dict):
            p.error(f"--merge: no block {args.key!r} in {args.into}")
        taken = [m for m in args.methods if m in old]
        if taken:
            p.error(f"--merge: {taken} already in {args.into} [{args.key}]")
        block = {**old, "command": f"{old.get('command', '')}; {args.command}".strip("; ")}
    for method in args.methods:
        block[method] = compare(args.runs, method, exact)
    print(json.dumps(block, indent=1))
    if args.into is not None:
        data[args.key] = block
        with atomic_write(args.into) as fh:
            json.dump(data, fh, indent=1)
        print(f"wrote {args.into} [{args.key}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
