"""Pre-flight (issue #17, item 1): everything checkable before a Flower process starts is
checked by ``semcom-run``, ``semcom-sweep``, ``semcom-deploy`` and the ServerApp.

Each refused case: exit 2, exactly one ``error: …`` line naming the key or file, no results
folder, and the code that starts Flower is never reached (it is replaced by a function that
fails the test). A run that fails before it has results leaves no results folder; resuming a
finished run changes no file. All in process or one short subprocess: seconds each.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import psutil
import pytest
import torch
from flwr.app import Context, RecordDict
from flwr.serverapp import Grid
from flwr.superlink.grid import InMemoryGrid

from flwr_semcom.checkpoint import Checkpointer
from flwr_semcom.config import ConfigError, compose_config
from flwr_semcom.results import new_run_dir, stub_folders_removed
from simulations import deploy_local, launch, server_app, sweep
from simulations.preflight import check_environment
from simulations.processes import PROJECT_ROOT

SHARED_MNIST = PROJECT_ROOT.parent / "shared" / "data" / "mnist"
SMALL = "data.num_samples=120 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8"
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")


def _no_flower(*_args: Any, **_kwargs: Any) -> int:
    raise AssertionError("Flower would have been started")


@pytest.fixture(autouse=True)
def _never_start_flower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "_run", _no_flower)
    monkeypatch.setattr(deploy_local, "local_deployment", _no_flower)


def _data_root(tmp_path: Path, mnist: str) -> Path:
    """A data root: ``mnist`` = 'none' (empty), 'bad' (wrong magic) or 'real' (a copy)."""
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    if mnist == "bad":
        for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            (root / "mnist" / name).write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 8)
    elif mnist == "real":
        if not SHARED_MNIST.is_dir():
            pytest.skip("no MNIST test files in ../shared/data")
        for f in SHARED_MNIST.glob("t10k-*"):
            shutil.copy(f, root / "mnist" / f.name)
    return root


# (id, semcom-run arguments, expected stderr line); OUT and ROOT are replaced per test
CASES: list[tuple[str, list[str], str]] = [
    (
        "data-root-missing",
        ["--experiment", "slf_table1", "paths.data_root=/no/such"],
        "error: paths.data_root='/no/such' resolves to /no/such, which is not an existing "
        "folder; expected a folder holding mnist/, cifar10-test/ and/or nyu_depth_v2/",
    ),
    (
        "mnist-missing",
        ["--experiment", "slf_table1", "paths.data_root=ROOT:none"],
        "error: MNIST test files not found under ROOT: expected ROOT/mnist/"
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (or uncompressed)",
    ),
    (
        "mnist-not-idx",
        ["--experiment", "slf_table1", "paths.data_root=ROOT:bad"],
        "error: IDX file ROOT/mnist/t10k-images-idx3-ubyte has magic 0x00000801; expected "
        "0x00000803",
    ),
    (
        "cifar-missing",
        ["--experiment", "slf_table1", "paths.data_root=ROOT:real"],
        "error: CIFAR-10 test set not found under ROOT: expected ROOT/cifar10-test/<class>/*.jpg "
        "(ImageFolder, classes airplane, automobile, bird, cat, deer, dog, frog, horse, ship, "
        "truck) or ROOT/cifar-10-batches-py",
    ),
    (
        "output-is-a-file",
        ["--experiment", "split_supervised", "paths.output_dir=OUT"],
        "error: paths.output_dir: OUT is a file; expected a folder (existing or to be created) "
        "to hold the results folders",
    ),
    (
        "channel-cannot-carry-features",
        ["--experiment", "split_supervised", "channel=dmc"],
        "error: channel.name: 'dmc' cannot carry analog features; valid: awgn, rayleigh, ideal",
    ),
    (
        "unbalanced-quote",
        ["--experiment", "split_supervised", "--overrides", "channel.snr_db='5"],
        'error: overrides: cannot parse "channel.snr_db=\'5" (No closing quotation)',
    ),
    (
        "zero-supernodes",
        ["--experiment", "split_supervised", "--num-supernodes", "0"],
        "error: --num-supernodes: 0 is too few; experiment 'split_supervised' needs 2 "
        "SuperNodes (one per device); expected an integer >= 2",
    ),
    (
        "too-few-supernodes",
        ["--experiment", "multitask", "--num-supernodes", "2"],
        "error: --num-supernodes: 2 is too few; experiment 'multitask' needs 4 SuperNodes "
        "(one per device); expected an integer >= 4",
    ),
    (
        "three-devices-two-supernodes",
        ["--experiment", "split_supervised", "data.modalities=[rgb,depth,rgb]"]
        + ["--num-supernodes", "2"],
        "error: --num-supernodes: 2 is too few; experiment 'split_supervised' needs 3 "
        "SuperNodes (one per device); expected an integer >= 3",
    ),
]
GPU_CASES: list[tuple[str, list[str], str]] = [
    (
        "cuda-without-gpu",
        ["--experiment", "split_supervised", "device=cuda"],
        "error: device: 'cuda' requested but torch sees no CUDA GPU; valid here: 'auto', 'cpu'",
    ),
]


def _resolve(args: list[str], line: str, tmp_path: Path) -> tuple[list[str], str, Path]:
    out = tmp_path / "outputs"
    resolved = []
    for a in args:
        if "ROOT:" in a:
            root = _data_root(tmp_path, a.split("ROOT:")[1])
            a, line = f"paths.data_root={root}", line.replace("ROOT", str(root))
        if "=OUT" in a:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("a file where the results folders would go")
            a, line = a.replace("OUT", str(out)), line.replace("OUT", str(out))
        resolved.append(a)
    if not any(a.startswith("paths.output_dir=") for a in resolved):
        resolved.append(f"paths.output_dir={out}")
    return resolved, line, out


def _refused_in_one_line(
    rc: int, err: str, line: str, out: Path, before: set[int] | None = None
) -> None:
    assert rc == 2, err
    assert err.splitlines() == [line], err
    assert not out.is_dir()  # no results folder (a file stays a file)
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    assert children <= (before or set()), "a process was left behind"


@pytest.mark.parametrize(
    ("args", "line"),
    [pytest.param(a, line, id=i) for i, a, line in CASES]
    + [pytest.param(a, line, id=i, marks=NO_GPU) for i, a, line in GPU_CASES],
)
def test_semcom_run_refuses_before_flower_in_one_line(
    args: list[str], line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, line, out = _resolve(args, line, tmp_path)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    rc = launch.main(args)
    _refused_in_one_line(rc, capsys.readouterr().err, line, out, before)


def test_semcom_run_process_exits_2_with_one_line_and_starts_nothing(tmp_path: Path) -> None:
    """The same through the real command: one stderr line, no Flower home, no results."""
    out, home = tmp_path / "outputs", tmp_path / "flwr-home"
    res = subprocess.run(
        [sys.executable, "-m", "simulations.launch", "--experiment", "split_supervised"]
        + ["channel=dmc", f"paths.output_dir={out}", "--flwr-home", str(home)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "error: channel.name: 'dmc' cannot carry analog features; valid: awgn, rayleigh, ideal"
    ]
    assert "SuperLink" not in res.stdout and not out.exists() and not home.exists()


@pytest.mark.parametrize("switch", ["SEMCOM_SIM_FEEDER", "SEMCOM_SUPERNODE_POLLS"])
def test_a_bad_runtime_switch_is_refused_before_flower(
    switch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(switch, "quick")
    out = tmp_path / "outputs"
    rc = launch.main(["--experiment", "split_supervised", f"paths.output_dir={out}"])
    assert rc == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {switch} must be one of fast, flower, got 'quick'"
    ]
    assert not out.exists()
    check_environment({switch: "flower"})  # the valid values pass
    check_environment({switch: "fast"})


def test_a_good_run_passes_pre_flight_with_the_experiments_node_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks accept the defaults: Flower would start (here: the stand-in is reached)."""
    seen: list[int] = []

    def run(_args: Any, _experiment: str, _overrides: list[str], nodes: int) -> int:
        seen.append(nodes)
        return 0

    monkeypatch.setattr(launch, "_run", run)
    assert launch.main(["--experiment", "multitask", f"paths.output_dir={tmp_path}/o"]) == 0
    assert launch.main(["--experiment", "node_check", "--num-supernodes", "3"]) == 0
    assert seen == [4, 3]  # the need when not given; more than needed is allowed
    assert not (tmp_path / "o").exists()


def test_sweep_refuses_every_point_before_the_first_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess, "run", _no_flower)  # no point's semcom-run starts
    argv = ["--experiment", "split_supervised", "channel=awgn,dmc", "--output-dir", str(tmp_path)]
    assert sweep.main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: channel.name: 'dmc' cannot carry analog features; valid: awgn, rayleigh, ideal"
    ]
    argv = ["--experiment", "split_supervised", "snr-db=0,5", "--output-dir", str(tmp_path)]
    assert sweep.main([*argv, "--launcher-args", "--num-supernodes 1"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --num-supernodes: 1 is too few; experiment 'split_supervised' needs 2 "
        "SuperNodes (one per device); expected an integer >= 2"
    ]
    assert sweep.main([*argv, "--launcher-args", "--num-supernodez 4"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --launcher-args: cannot parse '--num-supernodez 4'; expected semcom-run "
        "options such as '--num-supernodes 4 --num-cpus 1'"
    ]
    file = tmp_path / "file"
    file.write_text("")
    assert sweep.main([*argv[:-1], str(file / "sweeps")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: paths.output_dir: {file} is a file; expected a folder (existing or to be "
        "created) to hold the results folders"
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # no sweep folder


def test_semcom_deploy_refuses_before_certificates_or_processes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = deploy_local.main(["--experiment", "node_check", "--num-supernodes", "1"])
    assert rc == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --num-supernodes: 1 is too few; experiment 'node_check' needs 2 SuperNodes "
        "(one per device); expected an integer >= 2"
    ]
    rc = deploy_local.main(["--experiment", "split_supervised", "channel=dmc"])
    assert rc == 2 and capsys.readouterr().err.startswith("error: channel.name: 'dmc'")


def _context(run_config: dict[str, Any]) -> Context:
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)


def test_server_app_fails_in_one_line_before_sending_any_message(tmp_path: Path) -> None:
    """Plain `flwr run .`: the ServerApp refuses before it touches the grid (a simulation's
    grid: the data is checked on this host too)."""
    grid = MagicMock(spec=InMemoryGrid)
    run_config = {"experiment": "split_supervised", "overrides": "channel=dmc"}
    with pytest.raises(ConfigError) as err:
        server_app.main(grid, _context(run_config))
    assert str(err.value) == "channel.name: 'dmc' cannot carry analog features; valid: awgn, " + (
        "rayleigh, ideal"
    )
    overrides = f"paths.data_root={tmp_path}/none paths.output_dir={tmp_path}/out"
    with pytest.raises(ConfigError, match=r"^paths.data_root='.*/none' resolves to"):
        server_app.main(grid, _context({"experiment": "slf_table1", "overrides": overrides}))
    assert grid.method_calls == [] and not (tmp_path / "out").exists()
    deployed = MagicMock(spec=Grid)  # deployment: the data is on the SuperNodes' hosts
    with pytest.raises(RuntimeError, match="stop here"):
        deployed.get_node_ids.side_effect = RuntimeError("stop here")  # the runner started
        server_app.main(deployed, _context({"experiment": "slf_table1", "overrides": overrides}))


def test_a_run_that_fails_before_its_first_round_leaves_no_results_folder(
    tmp_path: Path,
) -> None:
    """split_supervised creates its folder (config.yaml), then no client connects within
    strategy.node_wait: the ServerApp removes the folder it had nothing to keep in."""
    grid = MagicMock(spec=Grid)
    grid.get_node_ids.return_value = []
    out = tmp_path / "out"
    overrides = f"{SMALL} strategy.node_wait=0.2 paths.output_dir={out}"
    threads = torch.get_num_threads()  # the runner sets num_threads for this process
    try:
        with pytest.raises(TimeoutError, match="only 0 of 2 clients connected"):
            run_config = {"experiment": "split_supervised", "overrides": overrides}
            server_app.main(grid, _context(run_config))
    finally:
        torch.set_num_threads(threads)
    assert (out / "split_supervised").is_dir()  # the parent may stay ...
    assert list((out / "split_supervised").iterdir()) == []  # ... the run's folder is gone


def test_stub_folders_removed_keeps_results_and_earlier_folders(tmp_path: Path) -> None:
    earlier = new_run_dir(tmp_path, "x")
    (earlier / "config.yaml").write_text("a: 1\n")
    with pytest.raises(RuntimeError), stub_folders_removed():
        stub = new_run_dir(tmp_path, "x")
        (stub / "config.yaml").write_text("a: 1\n")
        (stub / "run.json").write_text("{}")
        (stub / ".metrics.csv.tmp").write_text("")  # a temporary file: still nothing kept
        kept = new_run_dir(tmp_path, "x")
        (kept / "metrics.csv").write_text("round\n1\n")
        raise RuntimeError("round 2 failed")
    assert not stub.exists() and kept.is_dir() and earlier.is_dir()
    with stub_folders_removed():  # no failure: nothing removed
        ok = new_run_dir(tmp_path, "x")
    assert ok.is_dir()


def _checkpointed_run(tmp_path: Path, done: int, rounds: int = 2) -> tuple[Path, dict[str, bytes]]:
    """A split_supervised results folder whose checkpoint is of round ``done`` of ``rounds``
    (with summary.json when done == rounds); its files' bytes."""
    overrides = f"{SMALL} strategy.rounds={rounds} paths.project_root={PROJECT_ROOT}"
    cfg = compose_config("split_supervised", overrides)
    folder = tmp_path / "run"
    folder.mkdir()
    ckpt = Checkpointer(folder, cfg, experiment="split_supervised", overrides=overrides)
    ckpt.write_run_file()
    ckpt.save(done, {"rows": [{"round": r} for r in range(1, done + 1)], "elapsed_s": 1.0})
    (folder / "metrics.csv").write_text("round\n" + "".join(f"{r}\n" for r in range(1, done + 1)))
    if done == rounds:
        (folder / "summary.json").write_text(json.dumps({"rounds": rounds}))
    return folder, {p.name: p.read_bytes() for p in folder.iterdir()}


def test_resuming_a_finished_run_changes_nothing_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, files = _checkpointed_run(tmp_path, done=2)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert launch.main(["--resume", str(folder)]) == 0  # Flower never started (fixture)
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said == (
        f"[semcom-run] {folder}: the run finished (checkpoint after round 2 of 2, summary.json "
        "written); nothing to resume, no file changed"
    )
    grid = MagicMock(spec=Grid)  # plain `flwr run` with reliability.resume: the same
    run = json.loads((folder / "run.json").read_text())
    overrides = f"{run['overrides']} reliability.resume={folder}"
    server_app.main(grid, _context({"experiment": "split_supervised", "overrides": overrides}))
    assert grid.method_calls == []
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes


def test_resuming_an_unfinished_run_still_starts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = _checkpointed_run(tmp_path, done=1)
    seen: list[str] = []

    def run(_args: Any, _experiment: str, overrides: list[str], _nodes: int) -> int:
        seen.extend(overrides)
        return 0

    monkeypatch.setattr(launch, "_run", run)
    assert launch.main(["--resume", str(folder)]) == 0
    assert f"reliability.resume={folder}" in seen


@pytest.mark.parametrize("finished", [True, False])
def test_a_unit_checkpoint_is_finished_when_it_says_so(tmp_path: Path, finished: bool) -> None:
    """Runners of units (simulations/experiments/_resume.py) mark the checkpoint finished."""
    from simulations.preflight import finished_run

    overrides = f"{SMALL} paths.project_root={PROJECT_ROOT}"
    cfg = compose_config("split_supervised", overrides)
    ckpt = Checkpointer(tmp_path, cfg, experiment="split_supervised", overrides=overrides)
    ckpt.save(3, {"kind": "units", "done": ["a", "b", "c"], "finished": finished})
    resumed = compose_config("split_supervised", f"{overrides} reliability.resume={tmp_path}")
    said = finished_run(resumed, "split_supervised", overrides)
    expected = (
        f"{tmp_path}: the run finished (its checkpoint marks it finished after 3 unit(s)); "
        "nothing to resume, no file changed"
    )
    assert said == (expected if finished else None)
    assert finished_run(cfg, "split_supervised", overrides) is None  # not a resume
