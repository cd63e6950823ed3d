"""``kill -9`` + ``--resume`` of every experiment and of a sweep, through Flower (slow).

Per experiment (``multimodal``, ``slf_table1``, ``multitask``; ``split_supervised``'s is in
test_checkpoint_launch.py): ``semcom-run`` on the tiny config, uninterrupted; again, SIGKILL
to every process of the run at once (launcher, SuperLink, SuperExec, ServerApp, Ray) once a
chosen number of units is saved; ``semcom-run --resume <folder>``: exit 0 and the results
files byte-equal to the uninterrupted run's, wall-time fields aside
(:data:`_runs.WALL`); a second ``--resume`` changes no file.

The sweep: ``semcom-sweep`` over two seeds of ``multitask``, killed during its second point
after that point saved a unit, then ``semcom-sweep --resume``: the first point is kept (not
run again), the second continued; ``sweep.csv`` (wall times aside) and every point's files
equal an uninterrupted sweep's.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _procs import processes_with_flwr_home, run_launcher  # tests/ is on sys.path
from _runs import FILES, TINY, WALL, fingerprint

from simulations.launch import descendants

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
_launch = functools.partial(run_launcher, timeout=900)


def _kill9(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _units(pattern: str, root: Path) -> int:
    """Finished units in the newest checkpoint matching ``root/pattern`` (0 while none)."""
    best = 0
    for path in root.glob(pattern):
        with contextlib.suppress(Exception):  # being replaced right now: try again
            best = max(best, int(torch.load(path, weights_only=True)["round"]))
    return best


def _start_and_kill(
    cmd: list[str],
    homes: Callable[[list[int]], list[Path]],
    log: Path,
    ready: Callable[[], bool],
    timeout: float = 900,
) -> None:
    """Run ``cmd`` in its own session; once ``ready()``, ``kill -9`` at once it, its
    descendants and every process of the Flower homes ``homes(descendants)``."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )

    def family() -> list[int]:
        kids = descendants(proc.pid)
        flwr = [pid for home in homes(kids) for pid in processes_with_flwr_home(home)]
        return [proc.pid, *kids, *flwr]

    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.1)
        _kill9(family())
    finally:
        _kill9(family())
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]


def _no_leftovers(*homes: Path) -> None:
    time.sleep(1.0)
    for home in homes:
        leftover = processes_with_flwr_home(home)
        _kill9(leftover)
        assert leftover == [], home


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("experiment", "kill_after"),
    [("multimodal", 3), ("slf_table1", 4), ("multitask", 2)],
)
def test_kill_9_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, experiment: str, kill_after: int
) -> None:
    # same-length output paths (a path may be counted where the overrides string is)
    ref_out, out = tmp_path / "a", tmp_path / "b"
    ref = _launch(
        "--experiment",
        experiment,
        "--overrides",
        f"{TINY[experiment]} paths.output_dir={ref_out}",
        "--flwr-home",
        str(tmp_path / "h1"),
    )
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    (ref_dir,) = (ref_out / experiment).iterdir()

    cmd = [sys.executable, "-m", "simulations.launch", "--experiment", experiment]
    cmd += ["--overrides", f"{TINY[experiment]} paths.output_dir={out}"]
    cmd += ["--flwr-home", str(tmp_path / "h2")]
    pattern = f"{experiment}/*/checkpoint.pt"
    _start_and_kill(
        cmd,
        lambda _kids: [tmp_path / "h2"],
        tmp_path / "killed.log",
        lambda: _units(pattern, out) >= kill_after,
    )
    (run_dir,) = (out / experiment).iterdir()
    assert not (run_dir / "summary.json").exists()

    res = _launch("--resume", str(run_dir), "--flwr-home", str(tmp_path / "h3"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"resuming {run_dir}" in res.stdout
    names = FILES[experiment]
    expected, got = fingerprint(ref_dir, names), fingerprint(run_dir, names)
    for name in names:
        assert got[name] == expected[name], name

    before = _mtimes(run_dir)
    again = _launch("--resume", str(run_dir), "--flwr-home", str(tmp_path / "h4"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "no file changed" in again.stdout + again.stderr
    assert _mtimes(run_dir) == before
    _no_leftovers(*(tmp_path / h for h in ("h1", "h2", "h3", "h4")))


def _sweep_rows(folder: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO((folder / "sweep.csv").read_text())))
    return [{k: v for k, v in r.items() if k.rsplit(".", 1)[-1] not in WALL} for r in rows]


def _sweep(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulations.sweep", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def _launcher_homes(pids: list[int]) -> list[Path]:
    """The Flower homes ``semcom-run`` made for itself (``.flwr-home/run-<time>-<pid>``)."""
    return [home for pid in pids for home in ROOT.glob(f".flwr-home/run-*-{pid}")]


@pytest.mark.skipif(
    '"--resume"' not in (ROOT / "simulations" / "sweep.py").read_text(),
    reason="semcom-sweep has no --resume yet (/tmp/h6_sweep.patch, requested)",
)
def test_kill_9_of_a_sweep_then_resume_equals_an_uninterrupted_sweep(tmp_path: Path) -> None:
    words = ["seed=0,1", "--overrides", TINY["multitask"], "--experiment", "multitask"]
    ref = _sweep(*words, "--output-dir", str(tmp_path / "a"))
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    (ref_dir,) = (tmp_path / "a" / "multitask").iterdir()

    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "simulations.sweep", *words, "--output-dir", str(out)]
    second = "multitask/*/runs/001/multitask/*/checkpoint.pt"
    _start_and_kill(cmd, _launcher_homes, tmp_path / "killed.log", lambda: _units(second, out) >= 1)
    (sweep_dir,) = (out / "multitask").iterdir()
    first_run = sweep_dir / "runs" / "000"
    kept = _mtimes(first_run)

    res = _sweep("--resume", str(sweep_dir))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "point 1/2: finished already" in res.stdout
    assert _mtimes(first_run) == kept  # the finished point was not run again
    assert _sweep_rows(sweep_dir) == _sweep_rows(ref_dir)
    for i in ("000", "001"):
        (a,) = (ref_dir / "runs" / i / "multitask").iterdir()
        (b,) = (sweep_dir / "runs" / i / "multitask").iterdir()
        assert fingerprint(a, FILES["multitask"]) == fingerprint(b, FILES["multitask"]), i
