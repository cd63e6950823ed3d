"""Warm clients in the loopback TLS deployment (issue #16, item 1): every SuperNode gets a
``semcom-worker`` (``deploy/supernode.sh --worker``) and the per-message ClientApp process
relays to it (flwr_semcom/client_app.py, runtime/relay.py).

- ``node_check`` is answered by the workers (their PIDs), not by the ClientApp processes;
- ``split_supervised`` (the tiny config of test_deployment.py) gets the metrics of the same run
  in process, bit for bit, and the workers serve the whole run;
- a worker killed mid-run (SIGKILL between the two ``train.split_step`` of a pass) fails the run
  with one line naming the lost state, within minutes;
- a stale worker (another SuperNode session) on a node's socket is refused with one line and
  the message is handled in the ClientApp process (cold);
- afterwards no process of the deployment is left.

Socket-level behaviour (binding, refusal, torch-free relay, fallback): tests/test_worker.py.
Slow (``-m slow``): one deployment, ~5-8 min on a loaded 2-core box.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_deployment import EXACT_COLUMNS, FLOAT_COLUMNS, TINY_SPLIT  # tests/ is on sys.path

from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import compose_config
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.runtime.wire import pid_alive
from simulations.deploy_local import LocalDeployment, RunResult, local_deployment
from simulations.experiments.split_supervised import run as run_split

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    """TLS + SuperNode auth, two SuperNodes with a worker each; nothing may be left after."""
    work = tmp_path_factory.mktemp("warm")
    with local_deployment(2, tls=True, auth=True, workdir=work, warm=True) as dep:
        assert sorted(dep.worker_pids()) == [0, 1]
        yield dep
    time.sleep(0.5)
    assert dep.leftover_processes() == []
    assert [p for p in sorted(dep.seen_pids) if pid_alive(p)] == []


def _rows(folder: Path, experiment: str) -> list[dict[str, str]]:
    (path,) = folder.glob(f"{experiment}/*/metrics.csv")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _in_process(out: Path, overrides: str) -> list[dict[str, str]]:
    """The same split_supervised run in process (InProcessGrid, the bundled app, cold)."""
    cfg = compose_config("split_supervised", overrides)
    nodes = [{"partition-id": i, "num-partitions": 2} for i in (0, 1)]
    run_config = {"experiment": "split_supervised", "overrides": overrides}
    grid = InProcessGrid(client_app, nodes, run_config)
    run_split(grid, cfg, grid.server_context())
    return _rows(out, "split_supervised")


def _log_size(dep: LocalDeployment, name: str) -> int:
    return dep.logs[name].stat().st_size


def _wait_in_log(dep: LocalDeployment, name: str, start: int, text: str, t: float) -> None:
    deadline = time.monotonic() + t
    while text not in dep.logs[name].read_text(errors="replace")[start:]:
        assert time.monotonic() < deadline, f"{text!r} not in {dep.logs[name]} within {t} s"
        time.sleep(0.2)


def test_node_check_is_answered_by_the_workers(warm: LocalDeployment, tmp_path: Path) -> None:
    res = warm.run_experiment("node_check", f"paths.output_dir={tmp_path}", timeout=300)
    assert res.returncode == 0 and res.status == "finished:completed", res.output[-3000:]
    pid_of = {int(r["node_id"]): int(r["pid"]) for r in _rows(tmp_path, "node_check")}
    workers = warm.worker_pids()
    assert pid_of == {warm.node_ids[k]: workers[k] for k in (0, 1)}
    for k in (0, 1):  # semcom-deploy's SuperNodes poll adaptively (runtime/fastnode.py)
        assert "SuperNode polls: idle 0.10-3 s" in warm.logs[f"supernode{k}"].read_text()


def test_split_supervised_with_warm_clients_equals_the_in_process_run(
    warm: LocalDeployment, tmp_path: Path
) -> None:
    workers = warm.worker_pids()
    # same-length output paths: the overrides travel in the messages and count in the bytes
    dep_out, ref_out = tmp_path / "dep", tmp_path / "ref"
    res = warm.run_experiment(
        "split_supervised", f"{TINY_SPLIT} paths.output_dir={dep_out}", timeout=900
    )
    assert res.returncode == 0 and res.status == "finished:completed", res.output[-3000:]
    dep_rows = _rows(dep_out, "split_supervised")
    ref_rows = _in_process(ref_out, f"{TINY_SPLIT} paths.output_dir={ref_out}")
    assert len(dep_rows) == len(ref_rows) == 1
    for col in (*EXACT_COLUMNS, *FLOAT_COLUMNS):  # bit-identical, not just close
        assert dep_rows[0][col] == ref_rows[0][col], col
    assert warm.worker_pids() == workers  # the same two workers served every message
    for k in (0, 1):  # and none of them was handled cold
        assert "handling the message in this process" not in warm.logs[f"supernode{k}"].read_text()


def test_a_killed_worker_fails_the_run_with_one_line(warm: LocalDeployment, tmp_path: Path) -> None:
    start = _log_size(warm, "supernode0")
    result: list[RunResult] = []
    runner = threading.Thread(
        target=lambda: result.append(
            warm.run_experiment(
                "split_supervised", f"{TINY_SPLIT} paths.output_dir={tmp_path}", timeout=900
            )
        ),
        daemon=True,
    )
    t0 = time.monotonic()
    runner.start()
    # exchange 0 of the pass answered: the worker holds the pass's state, context.state not
    _wait_in_log(warm, "supernode0", start, "Sending: train.split_step", 600)
    os.kill(warm.worker_pids()[0], signal.SIGKILL)
    runner.join(timeout=900)
    assert result, "the launcher did not return"
    res = result[0]
    assert res.returncode == 1 and res.status == "finished:failed", res.output[-3000:]
    assert time.monotonic() - t0 < 900
    lost = [line for line in res.output.splitlines() if "warm state for exchange 0" in line]
    assert lost and all(
        "of round 1 was lost (the node's worker restarted mid-round)" in line for line in lost
    ), res.output[-3000:]
    assert 0 not in warm.worker_pids()
    node_log = warm.logs["supernode0"].read_text(errors="replace")[start:]
    assert "no worker listens on" in node_log and "handling the message in this process" in node_log


def test_a_stale_worker_is_refused_with_one_line(warm: LocalDeployment, tmp_path: Path) -> None:
    """A worker of another SuperNode session listening on node 1's socket (what a worker that
    outlived its SuperNode would be) serves no message of this node: the ClientApp process
    handles it itself (cold) and says why in one line on the SuperNode's console."""
    workers = warm.worker_pids()
    if 1 in workers:
        os.kill(workers[1], signal.SIGKILL)
        while pid_alive(workers[1]) and 1 in warm.worker_pids():
            time.sleep(0.1)
    sock = warm.worker_dirs[1] / "worker.sock"
    cmd = [sys.executable, "-m", "flwr_semcom.runtime.worker", "--app", "tests._worker_app:app"]
    cmd += ["--socket", str(sock), "--session", "stale"]
    with open(tmp_path / "stale.log", "wb") as fh:
        stale = warm.guard.start(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "serving" not in (tmp_path / "stale.log").read_text():
        assert time.monotonic() < deadline, "the stale worker did not start"
        time.sleep(0.2)
    start = _log_size(warm, "supernode1")
    res = warm.run_experiment("node_check", f"paths.output_dir={tmp_path}", timeout=300)
    warm.record_pids()
    assert res.returncode == 0 and res.status == "finished:completed", res.output[-3000:]
    pid_of = {int(r["node_id"]): int(r["pid"]) for r in _rows(tmp_path, "node_check")}
    assert pid_of[warm.node_ids[1]] not in (stale.pid, *workers.values())  # answered cold
    node_log = warm.logs["supernode1"].read_text(errors="replace")[start:]
    refusal = [line for line in node_log.splitlines() if "a stale worker" in line]
    assert len(refusal) == 1, node_log[-3000:]
    assert "belongs to SuperNode session stale, this node's is " in refusal[0]
    assert refusal[0].endswith("handling the message in this process (cold)")
