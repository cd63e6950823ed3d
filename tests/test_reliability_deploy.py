"""A SuperNode killed by PID in the middle of a loopback deployment run (slow; issue #9, item 1).

A TLS + SuperNode-auth SuperLink and two SuperNodes on 127.0.0.1 (simulations.deploy_local)
run the split_supervised main job; after round 1 the depth device's SuperNode (and its
SuperExec) get SIGKILL. The SuperLink answers for the dead node with an error reply ("Node
Unavailable", after two missed heartbeats) or, failing that, the ServerApp stops waiting after
``strategy.timeout``. With the default ``reliability.on_failure=abort`` it logs one line naming
node, partition, role, round and policy, and the run fails (semcom-run exit 1); round 1 stays
in metrics.csv, and after the deployment is stopped no process of it is left.
"""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from simulations.deploy_local import RunResult, local_deployment
from simulations.launch import descendants

#: 38 training samples in 7 batches of 6, S = 8: two train.split_step messages per round
TINY_SPLIT = (
    "data.num_samples=48 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=6 strategy.eval_batch_size=16 strategy.steps_per_message=8 "
    "strategy.rounds=3 strategy.timeout=120"
)


def _checkpointed(out: Path) -> bool:
    return any(out.glob("split_supervised/*/checkpoint.pt"))


def _rows(out: Path) -> list[dict[str, str]]:
    for path in out.glob("split_supervised/*/metrics.csv"):
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    return []


@pytest.mark.slow
def test_a_supernode_killed_mid_run_aborts_with_a_clear_line_and_keeps_round_1(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    with local_deployment(2, tls=True, auth=True, workdir=tmp_path / "dep") as dep:
        result: list[RunResult] = []
        runner = threading.Thread(
            target=lambda: result.append(
                dep.run_experiment(
                    "split_supervised", f"{TINY_SPLIT} paths.output_dir={out}", timeout=900
                )
            ),
            daemon=True,
        )
        runner.start()
        deadline = time.monotonic() + 900
        while not _checkpointed(out) and runner.is_alive():  # round 1 and its checkpoint done
            assert time.monotonic() < deadline
            time.sleep(0.5)
        supernode1 = dep.guard.procs[2]  # SuperLink, SuperNode 0, SuperNode 1 (partition 1)
        family = [supernode1.pid, *descendants(supernode1.pid)]
        for pid in family:
            os.kill(pid, signal.SIGKILL)
        runner.join(timeout=900)
        assert result, "the launcher did not return"
        res = result[0]
        assert res.returncode == 1 and res.status == "finished:failed", res.output[-3000:]
        lines = [ln for ln in res.output.splitlines() if "reliability: " in ln]
        print("\n".join(lines))  # shown with -rP: the failure line as the operator sees it
        # The SuperLink notices the missing heartbeats and answers for the dead node with an
        # error reply ("Node Unavailable"), usually before strategy.timeout; either way one line.
        assert any(
            "(partition 1, depth)" in ln
            and "round 2" in ln
            and ("Node Unavailable" in ln or "no reply within timeout=120 s" in ln)
            and "on_failure=abort: run aborted (completed rounds are kept)" in ln
            for ln in lines
        ), res.output[-3000:]
        assert [r["round"] for r in _rows(out)] == ["1"]
    time.sleep(0.5)
    assert dep.leftover_processes() == []
