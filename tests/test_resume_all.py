"""Resume of every experiment per unit (issue #17, item 2; simulations/experiments/_resume.py).

Fast: the unit bookkeeping (:class:`Progress`) on its own; and per experiment, in process, a
run stopped at the end of a unit before that unit was saved (its rows already in metrics.csv)
and resumed with fresh clients ends byte-equal to an uninterrupted run (wall times aside);
resuming it again changes no file. The real ``kill -9`` + ``semcom-run --resume`` versions
are in test_resume_kill.py (slow).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _runs import FILES, TINY, fingerprint, run_in_process  # tests/ is on sys.path

from flwr_semcom.checkpoint import CHECKPOINT_NAME, RUN_FILE, Checkpointer, CheckpointError
from flwr_semcom.config import compose_config
from simulations.experiments._resume import KIND, Progress, plain


def in_process(experiment: str, out: Path, extra: str = "") -> dict[str, Any]:
    """One in-process run of ``experiment`` on its tiny config (fresh clients)."""
    return run_in_process(experiment, TINY[experiment], out, extra)[0]


class StopError(Exception):
    """Stands for a crash: the unit ran, its save never happened."""


def _folder(out: Path, experiment: str) -> Path:
    (folder,) = (out / experiment).iterdir()
    return folder


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


# ------------------------------------------------------------------ Progress bookkeeping
def _cfg(tmp_path: Path, extra: str = "") -> Any:
    return compose_config("multimodal", f"paths.output_dir={tmp_path} {extra}".strip())


class _Context:
    def __init__(self, overrides: str = "x=1") -> None:
        self.run_config = {"experiment": "multimodal", "overrides": overrides}


def test_progress_saves_units_and_restores_rng_state(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    new = Progress.open(cfg, _Context())  # type: ignore[arg-type]
    assert not new.resumed and new.done == [] and new.state == {}
    # nothing resumable before the first unit ends (resuming it would be a fresh run)
    assert list(new.dir.iterdir()) == []
    new.save("a", {"rows": [{"x": np.float64(0.25), "n": np.int64(3), "t": (1, 2)}]})
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    assert (new.dir / CHECKPOINT_NAME).is_file() and (new.dir / RUN_FILE).is_file()
    new.save("b", {"rows": [], "nan": math.nan})
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0)

    again = Progress.open(cfg.copy(), _Context())  # type: ignore[arg-type]
    assert not again.resumed  # no reliability.resume: a new folder
    resumed = Progress.open(
        _cfg(tmp_path, f"reliability.resume={new.dir}"),
        _Context(),  # type: ignore[arg-type]
    )
    assert resumed.resumed and not resumed.finished and resumed.dir == new.dir
    assert resumed.done == ["a", "b"] and resumed.is_done("a") and not resumed.is_done("c")
    assert math.isnan(resumed.state["nan"])
    resumed.restore_rng()
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]
    with pytest.raises(ValueError, match="unit 'a' saved twice"):
        resumed.save("a", {})


def test_plain_turns_numpy_scalars_and_tuples_into_the_same_text() -> None:
    row = {"x": np.float64(0.1), "k": np.int64(2), "t": (1, np.float32(0.5))}
    out = plain(row)
    assert out == {"x": 0.1, "k": 2, "t": [1, 0.5]}
    assert type(out["x"]) is float and type(out["k"]) is int
    assert str(out["x"]) == str(row["x"]) and json.dumps(out["x"]) == json.dumps(row["x"])


def test_finished_run_is_reported_and_no_unit_checkpoint_without_checkpoints(
    tmp_path: Path,
) -> None:
    progress = Progress.open(_cfg(tmp_path), _Context())  # type: ignore[arg-type]
    progress.save("a", {"k": 1})
    progress.finish()
    back = Progress.open(
        _cfg(tmp_path, f"reliability.resume={progress.dir}"),
        _Context(),  # type: ignore[arg-type]
    )
    assert back.finished and back.done == ["a"] and back.state == {"k": 1}
    off = Progress.open(
        _cfg(tmp_path / "off", "reliability.checkpoint_every=0"),
        _Context(),  # type: ignore[arg-type]
    )
    off.save("a", {})
    assert sorted(p.name for p in off.dir.iterdir()) == []


def test_another_config_or_a_split_supervised_checkpoint_is_refused(tmp_path: Path) -> None:
    progress = Progress.open(_cfg(tmp_path), _Context())  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        Progress.open(
            _cfg(tmp_path, f"reliability.resume={progress.dir}"),
            _Context(),  # type: ignore[arg-type]
        )
    progress.save("a", {})
    with pytest.raises(CheckpointError, match=r"written by another config: .*0 there, 3 here"):
        Progress.open(
            _cfg(tmp_path, f"seed=3 reliability.resume={progress.dir}"),
            _Context(),  # type: ignore[arg-type]
        )
    other = tmp_path / "ss"
    other.mkdir()
    cfg = _cfg(tmp_path, f"reliability.resume={other}")
    Checkpointer(other, cfg, experiment="multimodal", overrides="").save(1, {"rows": []})
    with pytest.raises(CheckpointError, match="not a checkpoint of multimodal"):
        Progress.open(cfg, _Context())  # type: ignore[arg-type]
    assert KIND == "units"


# ------------------------------------------------------------------ per experiment
@pytest.mark.parametrize(
    ("experiment", "stop_at"),
    [
        ("multimodal", 3),  # simclr/stage1 ran, not saved: Stage I again
        ("multimodal", 4),  # simclr Stage II ran, not saved: from the saved Stage II encoders
        ("slf_table1", 3),  # channel point, second SLF n
        ("slf_table1", 6),  # source point, first SLF n
        ("multitask", 2),  # second link
    ],
)
def test_stopped_then_resumed_run_equals_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, experiment: str, stop_at: int
) -> None:
    ref = in_process(experiment, tmp_path / "a")
    names = FILES[experiment]

    calls = {"n": 0}
    real_save = Progress.save

    def save(self: Progress, unit: str, state: Any) -> None:
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise StopError(unit)
        real_save(self, unit, state)

    monkeypatch.setattr(Progress, "save", save)
    with pytest.raises(StopError):
        in_process(experiment, tmp_path / "b")
    monkeypatch.setattr(Progress, "save", real_save)
    folder = _folder(tmp_path / "b", experiment)
    assert not (folder / "summary.json").exists()

    resumed = in_process(experiment, tmp_path / "b", f"reliability.resume={folder}")
    assert resumed["results_dir"] == str(folder)
    expected = fingerprint(Path(ref["results_dir"]), names)
    got = fingerprint(folder, names)
    for name in names:
        assert got[name] == expected[name], name

    before = _mtimes(folder)
    again = in_process(experiment, tmp_path / "b", f"reliability.resume={folder}")
    assert _mtimes(folder) == before  # resuming a finished run changes nothing
    assert again == json.loads((folder / "summary.json").read_text())
