"""slf_table1 through Flower's simulation engine (Ray), on the tiny config. Slow: ``-m slow``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from _sim import run_in_simulation  # tests/ is on sys.path (pytest rootdir-relative import)
from test_slf import SMALL

from flwr_semcom.alignment import slf_handlers
from flwr_semcom.slf.factory import device_from_context

pytestmark = pytest.mark.slow


def test_slf_table1_in_simulation(tmp_path: Path) -> None:
    run_config: dict[str, bool | float | int | str] = {
        "experiment": "slf_table1",
        "overrides": f"{SMALL} paths.output_dir={tmp_path}",
    }
    run_in_simulation(slf_handlers(device_from_context), run_config)
    tables = list(tmp_path.glob("slf_table1/*/table1.csv"))
    assert len(tables) == 1
    with open(tables[0]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 24
    assert all(
        int(r["upload_bytes"]) == 4 * int(r["unfrozen_params"])
        for r in rows
        if r["method"] == "slf"
    )
