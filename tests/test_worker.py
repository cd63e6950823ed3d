"""The per-node worker (flwr_semcom/runtime/worker.py) and its relay (runtime/relay.py): a
round trip over the socket, permissions, version handshake, refusal of a stale worker (another
SuperNode session, run or node), owner death, a killed worker, the bundled ClientApp relaying
every message to the node's worker without importing torch (deployment), and relayed to a
spawned worker (warm) against the plain app (cold). Deployment: tests/test_deploy_warm.py."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from _messages import received  # tests/ is on sys.path
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from flwr_semcom.runtime import relay
from flwr_semcom.runtime.relay import WorkerError, call_worker
from flwr_semcom.runtime.wire import pid_alive
from flwr_semcom.split.protocol import TRAIN_STEP, config_record, encode_plan
from flwr_semcom.split.schedule import BatchPlan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="semw-"))  # short: a socket path has <= 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start(
    path: Path, *extra: str, owner: int = 0, app: str = "tests._worker_app:app", wait: bool = True
) -> subprocess.Popen[bytes]:
    """A worker on ``path`` (``extra``: more ``semcom-worker`` arguments); ``wait``: until it
    listens. Its output goes to ``<path>.out``."""
    cmd = [sys.executable, "-m", "flwr_semcom.runtime.worker", "--app", app]
    cmd += ["--socket", str(path), "--owner-pid", str(owner), *extra]
    with open(path.with_suffix(".out"), "ab") as out:
        proc = subprocess.Popen(  # noqa: S603
            cmd,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while wait and not path.exists():
        assert proc.poll() is None, "the worker exited at start"
        assert time.monotonic() < deadline, "the worker did not listen within 60 s"
        time.sleep(0.05)
    return proc


@pytest.fixture
def worker(sock_dir: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    path = sock_dir / "w.sock"
    proc = _start(path)
    yield path, proc
    proc.kill()
    proc.wait(10)


def _ctx(node: int = 5) -> Context:
    return Context(run_id=3, node_id=node, node_config={}, state=RecordDict(), run_config={})


def _query(action: str) -> Message:
    return received(RecordDict(), f"query.{action}", dst=5)


def test_round_trip_keeps_the_process_and_returns_the_state(
    worker: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    path, proc = worker
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    ctx = _ctx()
    for n in (1, 2, 3):
        msg = _query("count")
        reply = call_worker(path, msg, ctx)
        info = reply.content.config_records["info"]
        assert (info["n"], info["calls"], info["pid"], info["worker"]) == (n, n, proc.pid, True)
        assert reply.metadata.reply_to_message_id == msg.metadata.message_id
        assert int(ctx.state.config_records["c"]["n"]) == n  # type: ignore[arg-type]
    other = _ctx(node=6)  # another node's context: its own state, the same process
    info = call_worker(path, _query("count"), other).content.config_records["info"]
    assert (info["n"], info["calls"]) == (1, 4)


def test_a_handler_error_is_raised_in_the_relay(
    worker: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    with pytest.raises(ValueError, match="^boom: bad input$"):
        call_worker(worker[0], _query("fail"), _ctx())
    reply = call_worker(worker[0], _query("count"), _ctx())  # still serving
    assert reply.content.config_records["info"]["n"] == 1


def test_a_worker_of_another_code_version_is_refused(
    worker: tuple[Path, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay, "code_version", lambda: "0.0.0+other")
    with pytest.raises(WorkerError) as err:
        call_worker(worker[0], _query("count"), _ctx())
    text = str(err.value)
    assert "\n" not in text and "0.0.0+other" in text and "restart the worker" in text


def test_a_worker_of_another_session_run_or_node_is_refused(sock_dir: Path) -> None:
    path = sock_dir / "b.sock"
    proc = _start(path, "--session", "s1", "--run-id", "3", "--node-id", "5")
    try:
        cfg: dict[str, bool | float | int | str] = {
            relay.NODE_KEY: str(path),
            relay.SESSION_KEY: "s1",
        }
        ok = Context(run_id=3, node_id=5, node_config=cfg, state=RecordDict(), run_config={})
        assert call_worker(path, _query("count"), ok).content.config_records["info"]["n"] == 1
        stale = {
            "belongs to SuperNode session s1, this node's is s2 (a stale worker); restart it "
            "with the SuperNode": (3, 5, "s2"),
            "serves run id 3 only, not 4 (a stale worker)": (4, 5, "s1"),
            "serves node id 5 only, not 6 (a stale worker)": (3, 6, "s1"),
        }
        for reason, (run_id, node_id, session) in stale.items():
            cfg[relay.SESSION_KEY] = session
            ctx = Context(run_id, node_id, dict(cfg), RecordDict(), {})
            with pytest.raises(WorkerError) as err:
                call_worker(path, _query("count"), ctx)
            assert str(err.value) == f"node {node_id}, query.count: the worker on {path} {reason}"
            assert dict(ctx.state) == {}  # nothing ran
        # the worker itself refuses a request of another run (a relay that skips the check)
        sock = relay._connect(path)
        assert sock is not None
        with sock:
            assert relay.recv_frame(sock, 10)["bound"] == {
                "session": "s1",
                "run_id": 3,
                "node_id": 5,
            }
            request = {
                "kind": "call",
                "message": _query("count"),
                "context": (4, 5, {}, RecordDict(), {}),
            }
            relay.send_frame(sock, request)
            answer = relay.recv_frame(sock, 10)
        assert answer == {"ok": False, "error": "worker of run id 3 refused 4", "exc": None}
    finally:
        proc.kill()
        proc.wait(10)


def test_a_second_worker_on_a_live_socket_refuses_to_start(
    worker: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    path, first = worker
    second = _start(path, wait=False)
    assert second.wait(60) == 2
    assert (
        f"semcom-worker: a worker already listens on {path}" in path.with_suffix(".out").read_text()
    )
    info = call_worker(path, _query("count"), _ctx()).content.config_records["info"]
    assert info["pid"] == first.pid  # the first still serves


def test_the_bundled_app_relays_every_message_to_the_node_worker_without_torch(
    worker: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    """What a deployment ``flwr-clientapp`` process does: import the bundled app, relay to the
    worker the node config names (any message type), and never import torch."""
    path, proc = worker
    code = (
        "import sys, time\n"
        "t0 = time.perf_counter()\n"
        "from flwr.app import Context, RecordDict\n"
        "from flwr_semcom.client_app import app\n"
        "from tests._messages import received\n"
        "ctx = Context(3, 5, {'worker-socket': sys.argv[1]}, RecordDict(), {})\n"
        "for n in (1, 2):\n"
        "    info = app(received(RecordDict(), 'query.count', dst=5), ctx).content['info']\n"
        "    assert info['n'] == n and ctx.state['c']['n'] == n, (info, ctx.state)\n"
        "print(info['pid'], 'torch' in sys.modules, time.perf_counter() - t0)\n"
    )
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    pid, torch_loaded, _seconds = out.stdout.split()
    assert (int(pid), torch_loaded) == (proc.pid, "False")


def test_the_bundled_app_handles_the_message_itself_when_its_worker_is_gone(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from _worker_app import app as stub  # tests/ is on sys.path

    from flwr_semcom.client_app import RelayingClientApp

    seen: list[dict[str, Any]] = []

    def full_here(msg: Message, context: Context) -> Message:
        seen.append(dict(context.node_config))
        return stub(msg, context)

    bundled = RelayingClientApp()
    monkeypatch.setattr(bundled, "full", lambda: full_here)
    gone = str(sock_dir / "gone.sock")
    ctx = Context(3, 5, {relay.NODE_KEY: gone, "partition-id": 1}, RecordDict(), {})
    with caplog.at_level("WARNING", logger="flwr"):
        info = bundled(_query("count"), ctx).content.config_records["info"]
    assert (info["n"], info["worker"], ctx.state.config_records["c"]["n"]) == (1, False, 1)
    assert seen == [{"partition-id": 1}]  # the full app ran here, without the worker entry
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"node 5, query.count: no worker listens on {gone} (start semcom-worker); "
        "handling the message in this process (cold)"
    ]
    off = Context(3, 5, {relay.NODE_KEY: gone}, RecordDict(), {"warm-clients": False})
    bundled(_query("count"), off)  # switched off: no attempt, no warning
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    # a stale worker (another SuperNode session) is refused: the message is handled here too
    stale_path = sock_dir / "stale.sock"
    stale = _start(stale_path, "--session", "old")
    try:
        cfg = {relay.NODE_KEY: str(stale_path), relay.SESSION_KEY: "new"}
        ctx = Context(3, 5, dict(cfg), RecordDict(), {})
        with caplog.at_level("WARNING", logger="flwr"):
            info = bundled(_query("count"), ctx).content.config_records["info"]
        assert (info["pid"], info["worker"]) == (os.getpid(), False)
        last = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"][-1]
        assert last == (
            f"node 5, query.count: the worker on {stale_path} belongs to SuperNode session old, "
            "this node's is new (a stale worker); restart it with the SuperNode; handling the "
            "message in this process (cold)"
        )
    finally:
        stale.kill()
        stale.wait(10)


def test_no_worker_is_one_line(sock_dir: Path) -> None:
    with pytest.raises(WorkerError, match="no worker listens on .*start semcom-worker"):
        call_worker(sock_dir / "none.sock", _query("count"), _ctx())


def test_a_killed_worker_gives_one_error_line_and_no_hang(
    worker: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    path, proc = worker
    threading.Timer(1.0, lambda: os.kill(proc.pid, signal.SIGKILL)).start()
    t0 = time.monotonic()
    with pytest.raises(WorkerError) as err:
        call_worker(path, _query("sleep"), _ctx())
    assert time.monotonic() - t0 < 10
    text = str(err.value)
    assert "\n" not in text and "failed" in text and "live state is lost" in text


def test_the_worker_exits_when_its_owner_is_gone(sock_dir: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # noqa: S603
    path = sock_dir / "o.sock"
    proc = _start(path, owner=owner.pid)
    try:
        assert call_worker(path, _query("count"), _ctx()).content.config_records["info"]["n"] == 1
        owner.kill()
        owner.wait(10)
        assert proc.wait(15) == 0  # checked every second
        assert not path.exists()
    finally:
        owner.kill()
        proc.kill()
        proc.wait(10)


def test_frames_carry_subclasses_of_str_int_float_as_the_built_in_type() -> None:
    """``torch.__version__`` in a reply must not make the relaying process import torch."""
    import socket

    class Version(str):  # a local class: unpicklable unless sent as a plain str
        pass

    a, b = socket.socketpair()
    with a, b:
        relay.send_frame(a, {"torch": Version("2.14.1"), "n": [True, 3], "x": torch.__version__})
        got = relay.recv_frame(b, 10)
    assert got == {"torch": "2.14.1", "n": [True, 3], "x": str(torch.__version__)}
    assert type(got["torch"]) is str and type(got["x"]) is str and got["n"][0] is True


def test_the_relay_module_does_not_import_torch() -> None:
    code = "import sys, flwr_semcom.runtime.relay; print('torch' in sys.modules)"
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------- the bundled app
OVERRIDES = (
    "data.num_samples=40 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=4"
)
TASK = "rgbd_supervised"


def _step(
    app: ClientApp, ctx: Context, j: int, plan: list[BatchPlan] | None, grads: ArrayRecord | None
) -> Message:
    content = RecordDict({"config": config_record(TASK, round=1, exchange=j)})
    if grads is not None:
        content["grads"] = grads
    if plan is not None:
        content["plan"] = encode_plan(plan)
    return app(received(content, TRAIN_STEP, dst=ctx.node_id), ctx)


def test_the_bundled_app_relayed_to_a_spawned_worker_equals_the_cold_app(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flwr_semcom.client_app import make_app
    from flwr_semcom.split.protocol import pack_tensors, to_tensor, unpack_tensors
    from flwr_semcom.split.schedule import client_plans, group, train_batches

    monkeypatch.setenv("SEMCOM_WORKER_DIR", str(sock_dir / "w"))
    batches = train_batches(torch.arange(16), 4, seed=0, round_=1)
    groups = group(client_plans(batches, 0, seed=0, stage="finetune", round_=1), 2)
    results = {}
    for warm in (False, True):
        monkeypatch.setenv(relay.ENV_KEY, "1" if warm else "0")  # or run config warm-clients
        app = make_app({"experiment": "split_supervised", "overrides": OVERRIDES})
        ctx = Context(11, 7, {"partition-id": 0, "num-partitions": 2}, RecordDict(), {})
        ups, grads = [], None
        for j in range(len(groups) + 1):
            plan = groups[j] if j < len(groups) else None
            reply = _step(app, ctx, j, plan, grads)
            if plan is not None:
                z = unpack_tensors(reply.content.array_records["uplink"], [4, 4])
                ups.append(to_tensor(reply.content.array_records["uplink"]["z_hat"]))
                grads = pack_tensors([{"z_hat": 0.05 * u["z_hat"] + 0.01} for u in z])
            between = {k for k in ctx.state if k.startswith("split.")}
            if warm and plan is not None:  # the worker keeps the state: only the meta here
                assert between == {f"split.{TASK}.meta"}
        model = ctx.state.array_records[f"split.{TASK}.model"]
        results[warm] = (ups, {k: to_tensor(v) for k, v in model.items()})
        if warm:
            spawned = list(relay._spawned.values())
            assert len(spawned) == 1
            # the worker dies mid-pass: the next message fails with the lost-state line
            r0 = _step(app, ctx, 0, groups[0], None)
            spawned[0].kill()
            spawned[0].wait(10)
            z = unpack_tensors(r0.content.array_records["uplink"], [4, 4])
            g = pack_tensors([{"z_hat": 0.05 * u["z_hat"]} for u in z])
            with pytest.raises(RuntimeError, match="warm state for exchange 0 of round 1 was lost"):
                _step(app, ctx, 1, groups[1], g)  # respawned: the cold path refuses
            for proc in relay._spawned.values():
                proc.kill()
                proc.wait(10)
    for a, b in zip(results[False][0], results[True][0], strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(results[False][1][k], results[True][1][k]) for k in results[False][1])


# ---------------------------------------------------------------------- simulation engine
def _simulate_split(overrides: str) -> dict[str, Any]:
    from _sim import bundled_client_app  # tests/ is on sys.path
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from flwr_semcom.config import compose_config
    from flwr_semcom.paper1.stage2 import SUPERVISED_CLIENT_TASK, supervised_server
    from flwr_semcom.split import split_kwargs
    from strategies.split_training import SplitTraining, server_state

    out: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = compose_config("split_supervised", overrides)
        torch.set_num_threads(int(cfg.num_threads))
        strategy = SplitTraining(
            supervised_server(cfg), client_task=SUPERVISED_CLIENT_TASK, **split_kwargs(cfg)
        )
        strategy.start(grid)
        out["rows"] = [
            {k: v for k, v in row.items() if not k.endswith("_s")} for row in strategy.history
        ]
        out["ledger"] = strategy.ledger.summary()
        out["clients"] = strategy.fetch_client_states(grid)
        out["server"] = server_state(strategy)

    run_simulation(
        server_app=server_app,
        client_app=bundled_client_app({"experiment": "split_supervised", "overrides": overrides}),
        num_supernodes=2,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    assert "clients" in out, "the simulation did not finish (see the log above)"
    return out


def _workers_under(directory: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "flwr_semcom.runtime.worker" in cmdline and str(directory) in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_simulation_with_warm_clients_by_default_equals_cold_and_leaves_no_process(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = (
        "data.num_samples=48 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
        "strategy.batch_size=6 strategy.rounds=2 strategy.eval_batch_size=16 "
        "strategy.steps_per_message=2"
    )
    monkeypatch.setenv("SEMCOM_WORKER_DIR", str(sock_dir / "w"))
    runs = {}
    for warm in (False, True):
        if warm:  # the default in the simulation engine's actors
            monkeypatch.delenv(relay.ENV_KEY, raising=False)
        else:
            monkeypatch.setenv(relay.ENV_KEY, "0")
        runs[warm] = _simulate_split(overrides)
    cold, warm_run = runs[False], runs[True]
    assert cold["rows"] == warm_run["rows"] and cold["ledger"] == warm_run["ledger"]
    for p in (0, 1):
        a, b = cold["clients"][p], warm_run["clients"][p]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(cold["server"][k], warm_run["server"][k]) for k in cold["server"])
    assert len(list((sock_dir / "w").glob("*.log"))) == 2  # one worker per node was started
    deadline = time.monotonic() + 20
    while _workers_under(sock_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _workers_under(sock_dir) == []


def test_the_run_config_key_takes_true_false_or_unset() -> None:
    from flwr_semcom.config import ConfigError, compose_config
    from flwr_semcom.run_config import compose_run_config

    base = {"experiment": "split_supervised", "overrides": ""}
    for value in ("", True, False):  # a runtime key: the composed config is the same
        assert compose_run_config({**base, "warm-clients": value}) == compose_config(
            "split_supervised"
        )
    with pytest.raises(ConfigError) as err:
        compose_run_config({**base, "warm-clients": "yes"})
    assert (
        str(err.value) == "warm-clients: invalid value 'yes'; expected true or false (unset: \"\")"
    )


def test_a_spawned_worker_exits_at_once_when_its_spawner_is_killed(sock_dir: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from flwr.app import Context, RecordDict\n"
        "from flwr_semcom.runtime.relay import call_worker\n"
        "from tests._messages import received\n"
        "ctx = Context(3, 5, {}, RecordDict(), {})\n"
        "r = call_worker(Path(sys.argv[1]), received(RecordDict(), 'query.count', dst=5), ctx,\n"
        "                spawn_app='tests._worker_app:app')\n"
        "print(r.content.config_records['info']['pid'], flush=True)\n"
        "time.sleep(120)\n"
    )
    path = sock_dir / "s.sock"
    spawner = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", code, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert spawner.stdout is not None
        pid = int(spawner.stdout.readline())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        spawner.kill()
        spawner.wait(10)
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid), "the worker outlived its spawner"
        assert not path.exists()
    finally:
        spawner.kill()


def test_the_relay_sends_only_its_message_types_unless_the_worker_holds_state(
    worker: tuple[Path, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flwr.app import ConfigRecord

    path, proc = worker
    mod = relay.relay_mod("tests._worker_app:app", ["query.count"])
    here: list[str] = []

    def call_next(msg: Message, ctx: Context) -> Message:
        here.append(msg.metadata.message_type)
        return Message(RecordDict(), reply_to=msg)

    ctx = Context(3, 5, {"worker-socket": str(path)}, RecordDict(), {})
    info = mod(_query("count"), ctx, call_next).content.config_records["info"]
    assert info["pid"] == proc.pid and here == []  # relayed
    mod(_query("other"), ctx, call_next)
    assert here == ["query.other"]  # not a relayed type: handled here
    ctx.state["split.t.meta"] = ConfigRecord({"stamp": "abc", "saved": ""})  # live in the worker
    with pytest.raises(ValueError, match="No query function registered with name 'other'"):
        mod(_query("other"), ctx, call_next)  # relayed: the worker's app has no such handler
    assert here == ["query.other"]
    off = Context(3, 5, {"worker-socket": str(path)}, RecordDict(), {"warm-clients": False})
    mod(_query("count"), off, call_next)  # switched off: everything here
    assert here == ["query.other", "query.count"]
    assert not relay.has_live_state(off)


def test_sweep_removes_the_files_of_dead_workers_only(
    worker: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    import socket

    live_path = worker[0]
    directory = live_path.parent
    old = time.time() - 3600
    for name in ("dead", "young"):  # a socket file nobody listens on (its worker was killed)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(directory / f"{name}.sock"))
        s.close()
        for suffix in (".lock", ".log"):
            (directory / f"{name}{suffix}").touch()
    os.utime(directory / "dead.sock", (old, old), follow_symlinks=False)
    os.utime(live_path, (old, old), follow_symlinks=False)
    assert relay.sweep(directory) == 1
    left = sorted(p.name for p in directory.iterdir())
    assert left == ["w.out", "w.sock", "young.lock", "young.log", "young.sock"]  # live, young stay
    assert call_worker(live_path, _query("count"), _ctx()).content.config_records["info"]["n"] == 1
