"""Every JSON file an experiment writes parses with a strict JSON parser (issue #18, item 8).

RFC 8259 has no ``NaN`` / ``Infinity``; Python's ``json`` writes them unless told not to, and
strict readers (``jq``, JavaScript, most JSON libraries) then refuse the whole file. Each
experiment runner runs once on its tiny configuration, in process; every ``*.json`` below its
output folder (results, ledger, checkpoint ``run.json``, caches) must parse with
:func:`_runs.strict_json`. Where a value is NaN (multitask: a relative gain over a zero
accuracy) the JSON holds ``null`` exactly where the csv holds ``nan``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from _runs import (  # tests/ is on sys.path
    MULTITASK_TINY,
    PAPER1_TINY,
    SLF_SMALL,
    SPLIT_TINY,
    run_in_process,
    strict_json,
)

from flwr_semcom.config import compose_config

ROOT = Path(__file__).resolve().parents[1]

#: runner -> (experiment, overrides): the smallest run of each runner
RUNS = {
    "multimodal": (
        "multimodal",
        f"{PAPER1_TINY} pretrain.rounds=1 experiment.methods=[decur,supervised]",
    ),
    "slf_table1": ("slf_table1", SLF_SMALL),
    "multitask": ("multitask", MULTITASK_TINY),
    "split_supervised": ("split_supervised", SPLIT_TINY),
    "node_check": ("node_check", "experiment.wait=60"),
}


def test_the_strict_parser_refuses_nan_and_infinity(tmp_path: Path) -> None:
    loose = tmp_path / "loose.json"
    for value in (math.nan, math.inf, -math.inf):
        loose.write_text(json.dumps({"x": [1.0, value]}))
        with pytest.raises(ValueError, match="non-standard JSON token"):
            strict_json(loose)
    loose.write_text('{"x": [1.0, null]}')
    assert strict_json(loose) == {"x": [1.0, None]}


def test_every_experiment_runner_is_covered() -> None:
    runners = {
        str(compose_config(path.stem).experiment.runner)
        for path in (ROOT / "conf" / "experiment").glob("*.yaml")
    }
    assert runners == set(RUNS)


@pytest.mark.parametrize("runner", list(RUNS))
def test_every_json_file_of_a_run_is_strict(tmp_path: Path, runner: str) -> None:
    experiment, overrides = RUNS[runner]
    run_in_process(experiment, overrides, tmp_path)
    files = sorted(tmp_path.rglob("*.json"))
    assert {"summary.json", "metrics.json"} <= {f.name for f in files}
    parsed = {f: strict_json(f) for f in files}  # raises on a bare NaN / Infinity
    if runner == "multitask":  # a gain over a zero accuracy is NaN: null in JSON, nan in csv
        (summary,) = (v for f, v in parsed.items() if f.name == "summary.json")
        (gains_csv,) = tmp_path.rglob("gains.csv")
        rows = list(csv.DictReader(gains_csv.open()))
        assert len(rows) == len(summary["gains"]) > 0
        for row, entry in zip(rows, summary["gains"]):
            for key in ("gain_classification_pct", "gain_depth_pct", "gain_mean_pct"):
                assert (row[key] == "nan") == (entry[key] is None), (key, row, entry)
