"""The example apps in ``examples/`` run with the command their README gives (one round).

``examples/byo-model``: ``flwr run . --stream`` in the example's folder with the venv
activated (``scripts/setup.sh`` makes ``activate`` export
``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1``). The test runs exactly that, with its own
``FLWR_HOME`` and SuperLink ports, ``num-rounds=1`` and a results folder in ``tmp_path``, then
stops the SuperLink that ``flwr run`` leaves behind (by PID) and checks the results file:
both methods' accuracies, and the bytes against a hand count (slow: about a minute). The same
apps also run in the default suite on an in-process grid (a few seconds, no engine).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psutil
import pytest
import torch

from flwr_semcom.inprocess import InProcessGrid

ROOT = Path(__file__).resolve().parents[1]
BYO = ROOT / "examples" / "byo-model"
README_COMMAND = ["flwr", "run", ".", "--stream"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _activated_env(flwr_home: Path) -> dict[str, str]:
    """The environment of a shell with ``.venv/bin/activate`` sourced, and our own home."""
    env = dict(os.environ)
    env.update(
        {
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
            "VIRTUAL_ENV": str(Path(sys.executable).parents[1]),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_HOME": str(flwr_home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
            "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
            "FLWR_TELEMETRY_ENABLED": "0",
        }
    )
    return env


def _flower_processes(flwr_home: Path) -> list[psutil.Process]:
    """Live processes started with ``FLWR_HOME=flwr_home`` (the managed SuperLink, ...)."""
    found = []
    for proc in psutil.process_iter():
        try:
            mine = proc.environ().get("FLWR_HOME") == str(flwr_home)
            if mine and proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _stop(flwr_home: Path) -> None:
    procs = _flower_processes(flwr_home)
    for proc in procs:
        proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=20)
    for proc in alive:
        proc.kill()


def _model_bytes(num_symbols: int) -> int:
    """float32 bytes of the example's whole link (encoder + JSCC head + decoder), by hand."""
    conv1 = 3 * 16 * 9 + 16
    conv2 = 16 * 32 * 9 + 32
    jscc = 32 * 4 * 4 * 2 * num_symbols + 2 * num_symbols
    dec = 2 * num_symbols * 64 + 64 + 64 * 10 + 10
    return 4 * (conv1 + conv2 + jscc + dec)


def _check_results(results: dict, n_train: int, k: int = 16) -> None:
    """Both methods present; FedAvg bytes = the model's weights by hand; split bytes = the
    features and gradients of every training image, plus a little control."""
    assert set(results) == {"split", "fedavg"}
    for row in results.values():
        assert 0.0 <= row["accuracy"] <= 1.0
        assert 0 < row["train_bytes"] < row["total_bytes"]
    # FedAvg, 1 round x 2 devices: weights down + up for training, down for evaluation
    assert results["fedavg"]["train_bytes"] == 2 * 2 * _model_bytes(k)
    assert results["fedavg"]["total_bytes"] == 3 * 2 * _model_bytes(k)
    # split: per training image each device sends k/2 complex symbols (k float32) and gets
    # their gradients back; the rest is plans and control values
    payload = 2 * 2 * n_train * k * 4
    assert payload < results["split"]["train_bytes"] < 1.2 * payload


def test_byo_model_example_apps_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's ServerApp main against its ClientApp on an InProcessGrid (no engine)."""
    monkeypatch.syspath_prepend(str(BYO))
    threads = torch.get_num_threads()
    try:  # the example's task.py sets one thread per process
        from byo_app.client_app import app as client_app
        from byo_app.server_app import main
    finally:
        torch.set_num_threads(threads)

    config = tomllib.loads((BYO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    config.update({"num-rounds": 1, "images-per-class": 20, "results-dir": str(tmp_path)})
    nodes = [{"partition-id": p, "num-partitions": 2} for p in (0, 1)]
    grid = InProcessGrid(client_app, nodes, run_config=config)
    main(grid, grid.server_context())
    _check_results(json.loads((tmp_path / "results.json").read_text()), n_train=160)


@pytest.mark.slow
def test_byo_model_example_runs_one_round_with_the_readme_command(tmp_path: Path) -> None:
    readme = (BYO / "README.md").read_text()
    assert " ".join(README_COMMAND) in readme
    flwr_home, out = tmp_path / "flwr-home", tmp_path / "results"
    run_config = f'num-rounds=1 results-dir="{out}"'
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [*README_COMMAND, "--run-config", run_config],
            cwd=BYO,
            env=_activated_env(flwr_home),
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        _stop(flwr_home)
    elapsed = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert (out / "results.json").is_file(), log[-3000:]
    # pyproject.toml: 100 images per class, 20 % held out; num-symbols 16
    _check_results(json.loads((out / "results.json").read_text()), n_train=800)
    assert not _flower_processes(flwr_home)
    print(f"byo-model, one round through `flwr run`: {elapsed:.1f} s")
