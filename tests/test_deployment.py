"""Deployment: certificate and key scripts, and a real TLS loopback SuperLink + SuperNodes.

The integration tests start a SuperLink (TLS, SuperNode authentication) and two SuperNodes on
127.0.0.1 through ``simulations.deploy_local`` (which drives the ``deploy/`` scripts and
``semcom-run --superlink``), run experiments on them, and check that every process started is
gone afterwards.
"""

from __future__ import annotations

import csv
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulations.deploy_local import LocalDeployment, free_ports, local_deployment
from simulations.processes import ProcessGuard

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _sh(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def _san(cert: Path) -> set[str]:
    out = _sh("openssl", "x509", "-in", cert, "-noout", "-ext", "subjectAltName").stdout
    return {e.strip() for e in out.splitlines()[1].split(",")}


def _tls_handshake(certs: Path, server_name: str) -> str:
    """Serve ``server.pem`` on loopback and connect verifying against ``ca.crt``."""
    srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv_ctx.load_cert_chain(certs / "server.pem", certs / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with srv_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except ssl.SSLError:  # the client refused the certificate
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        cli_ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            cli_ctx.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            return tls.recv(2).decode()
    finally:
        thread.join(timeout=10)
        listener.close()


# --- certificates and keys (fast) --------------------------------------------------------


def test_gen_certs_san_chain_and_tls_handshake(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    res = _sh(DEPLOY / "gen_certs.sh", certs, "box1.lan", "10.1.2.3")
    assert res.returncode == 0, res.stderr
    for name in ("ca.key", "ca.crt", "server.key", "server.pem"):
        assert (certs / name).is_file(), name
    assert (certs / "server.key").stat().st_mode & 0o077 == 0  # private keys: owner only
    assert (certs / "ca.key").stat().st_mode & 0o077 == 0
    assert _san(certs / "server.pem") == {
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "DNS:box1.lan",
        "IP Address:10.1.2.3",
    }
    verify = _sh("openssl", "verify", "-CAfile", certs / "ca.crt", certs / "server.pem")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert _tls_handshake(certs, "127.0.0.1") == "ok"
    assert _tls_handshake(certs, "localhost") == "ok"
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_handshake(certs, "not-in-the-san.example")


def test_gen_certs_is_idempotent_and_refuses_to_overwrite(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert _sh(DEPLOY / "gen_certs.sh", certs, "box1").returncode == 0
    before = {p.name: p.read_bytes() for p in certs.iterdir()}

    again = _sh(DEPLOY / "gen_certs.sh", certs, "box1")  # same request: nothing to do
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert {p.name: p.read_bytes() for p in certs.iterdir()} == before

    other = _sh(DEPLOY / "gen_certs.sh", certs, "box2")  # different names: refused
    assert other.returncode == 1
    assert "exists" in other.stderr and "--force" in other.stderr
    assert {p.name: p.read_bytes() for p in certs.iterdir()} == before

    forced = _sh(DEPLOY / "gen_certs.sh", "--force", certs, "box2")
    assert forced.returncode == 0, forced.stderr
    assert (certs / "server.key").read_bytes() != before["server.key"]
    assert (certs / "ca.key").read_bytes() == before["ca.key"]  # the CA is kept
    assert (certs / "ca.crt").read_bytes() == before["ca.crt"]
    assert "DNS:box2" in _san(certs / "server.pem")
    assert "DNS:box1" not in _san(certs / "server.pem")
    assert _tls_handshake(certs, "127.0.0.1") == "ok"

    bad = _sh(DEPLOY / "gen_certs.sh", tmp_path / "x", "bad name")
    assert bad.returncode == 1 and "invalid hostname or IP 'bad name'" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_supernode_key_is_openssh_ecdsa_384_and_not_overwritten(tmp_path: Path) -> None:
    res = _sh(DEPLOY / "supernode_key.sh", tmp_path, "box0")
    assert res.returncode == 0, res.stderr
    key, pub = tmp_path / "box0", tmp_path / "box0.pub"
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pub.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert key.stat().st_mode & 0o077 == 0
    fingerprint = _sh("ssh-keygen", "-l", "-f", pub).stdout
    assert fingerprint.startswith("384 ") and "(ECDSA)" in fingerprint

    before = key.read_bytes()
    again = _sh(DEPLOY / "supernode_key.sh", tmp_path, "box0")
    assert again.returncode == 1 and "--force" in again.stderr
    assert key.read_bytes() == before
    assert _sh(DEPLOY / "supernode_key.sh", "--force", tmp_path, "box0").returncode == 0
    assert key.read_bytes() != before


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("superlink.sh", [], "--certs DIR is required"),
        ("superlink.sh", ["--insecure"], "SuperNode authentication needs TLS"),
        ("superlink.sh", ["--certs", "/nonexistent", "--port", "0"], "--port must be"),
        ("supernode.sh", ["--superlink", "127.0.0.1"], "--superlink must be HOST:PORT"),
        (
            "supernode.sh",
            ["--superlink", "127.0.0.1:1", "--partition-id", "2", "--num-partitions", "2"],
            "--partition-id must be an integer in [0, 1]",
        ),
        (
            "supernode.sh",
            ["--superlink", "h:1", "--partition-id", "0", "--num-partitions", "1"],
            "--ca CA_CERT is required",
        ),
        (
            "supernode.sh",
            ["--superlink", "h:1", "--partition-id", "0", "--num-partitions", "1", "--insecure"]
            + ["--task-poll-interval", "0"],
            "--task-poll-interval must be",
        ),
        ("register_supernode.sh", ["--superlink", "h:1", "--ca", "/nonexistent"], "missing"),
    ],
)
def test_deploy_scripts_reject_bad_arguments(script: str, args: list[str], message: str) -> None:
    res = _sh(DEPLOY / script, *args)
    assert res.returncode == 1
    assert message in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1  # one line


def test_launcher_rejects_bad_superlink_options(tmp_path: Path) -> None:
    def launch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "simulations.launch", "--experiment", "node_check", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    res = launch("--superlink", "127.0.0.1")
    assert res.returncode == 2 and "--superlink must be HOST:PORT" in res.stderr
    res = launch("--superlink", "127.0.0.1:9", "--root-certificates", str(tmp_path / "no.crt"))
    assert res.returncode == 2 and "no such readable file" in res.stderr


# --- loopback deployment (real processes) -------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


#: A split_supervised run small enough for a test: 38 training samples in 7 batches of 6, so
#: with S=8 batches per message one round is 2 train.split_step messages per node, plus the
#: query.split_state and evaluate.split_forward messages.
TINY_SPLIT = (
    "data.num_samples=48 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=6 strategy.rounds=1 strategy.eval_batch_size=16 "
    "strategy.steps_per_message=8"
)
#: metrics.csv columns that must agree between simulation and deployment
EXACT_COLUMNS = ("round", "cum_up_bytes", "cum_down_bytes", "cum_channel_uses")
FLOAT_COLUMNS = ("loss", "train_accuracy", "test_loss", "test_accuracy")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    """A TLS + SuperNode-auth SuperLink and two SuperNodes; afterwards nothing may be left."""
    work = tmp_path_factory.mktemp("deploy")
    holder: list[LocalDeployment] = []
    with local_deployment(2, tls=True, auth=True, workdir=work, warm=False) as dep:
        holder.append(dep)
        yield dep
    dep = holder[0]
    time.sleep(0.5)
    assert dep.leftover_processes() == []
    assert [p for p in sorted(dep.seen_pids) if _alive(p)] == []


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_node_check_on_tls_deployment(deployment: LocalDeployment, tmp_path: Path) -> None:
    res = deployment.run_experiment("node_check", f"paths.output_dir={tmp_path}", timeout=300)
    assert res.returncode == 0, res.output[-3000:]
    assert res.status == "finished:completed"
    (run_dir,) = (tmp_path / "node_check").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {k: summary[k] for k in ("nodes", "answered", "failed")} == {
        "nodes": 2,
        "answered": 2,
        "failed": 0,
    }
    assert summary["round_trip_s"] > 0
    # Node ids are fixed at registration; partition k was started with the k-th key.
    partition_of = {int(r["node_id"]): r["node_config"] for r in _rows(run_dir / "metrics.csv")}
    assert partition_of == {
        deployment.node_ids[k]: f"num-partitions=2 partition-id={k}" for k in range(2)
    }
    rows = _rows(run_dir / "metrics.csv")
    assert all(r["flwr"] == "1.41.0" for r in rows)
    # each ClientApp ran in a process of its own (flwr-clientapp), not in a SuperNode
    started = {p.pid for p in deployment.guard.procs}
    assert len({int(r["pid"]) for r in rows}) == 2
    assert not {int(r["pid"]) for r in rows} & started


@pytest.mark.slow
def test_unregistered_supernode_is_refused(deployment: LocalDeployment, tmp_path: Path) -> None:
    assert _sh(DEPLOY / "supernode_key.sh", tmp_path, "stranger").returncode == 0
    # register the key, then unregister it again: the SuperLink must refuse the node
    link = ["--superlink", deployment.address, "--ca", str(deployment.ca)]
    reg = _sh(DEPLOY / "register_supernode.sh", *link, tmp_path / "stranger.pub")
    assert reg.returncode == 0, reg.stdout + reg.stderr
    node_id = next(w for w in reg.stdout.split() if w.isdigit())
    assert node_id in _sh(DEPLOY / "register_supernode.sh", *link, "--list").stdout
    unreg = _sh(DEPLOY / "register_supernode.sh", *link, "--unregister", node_id)
    assert unreg.returncode == 0, unreg.stdout + unreg.stderr
    log = tmp_path / "stranger.log"
    with open(log, "wb") as fh:
        proc = deployment.guard.start(
            [
                str(DEPLOY / "supernode.sh"),
                "--superlink",
                deployment.address,
                "--ca",
                str(deployment.ca),
                "--key",
                str(tmp_path / "stranger"),
                "--partition-id",
                "0",
                "--num-partitions",
                "1",
                "--port",
                str(free_ports(1)[0]),
                "--",
                "--max-retries",
                "0",
            ],
            env=deployment.env,
            cwd=deployment.workdir / "neutral",
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        rc = proc.wait(timeout=60)
    finally:
        deployment.record_pids()
    assert rc != 0
    assert "Failed to activate SuperNode" in log.read_text()


@pytest.mark.slow
def test_split_supervised_deployment_matches_simulation(
    deployment: LocalDeployment, tmp_path: Path
) -> None:
    # Same-length output paths: the overrides string travels in every message's config and is
    # counted in the ledger's bytes.
    sim_out, dep_out = tmp_path / "sim", tmp_path / "dep"
    guard = ProcessGuard()
    try:  # the simulation runs while the deployment mostly waits on its polls
        with open(tmp_path / "sim.log", "wb") as log:
            sim = guard.start(
                [sys.executable, "-m", "simulations.launch", "--experiment", "split_supervised"]
                + ["--overrides", f"{TINY_SPLIT} paths.output_dir={sim_out}"]
                + ["--flwr-home", str(tmp_path / "sim-home")],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        res = deployment.run_experiment(
            "split_supervised", f"{TINY_SPLIT} paths.output_dir={dep_out}", timeout=600
        )
        sim_rc = sim.wait(timeout=600)
    finally:
        guard.stop_all()
    sim_log = (tmp_path / "sim.log").read_text()
    assert sim_rc == 0 and "finished:completed" in sim_log, sim_log[-3000:]
    assert res.returncode == 0 and res.status == "finished:completed", res.output[-3000:]

    (sim_dir,) = (sim_out / "split_supervised").iterdir()
    (dep_dir,) = (dep_out / "split_supervised").iterdir()
    sim_rows, dep_rows = _rows(sim_dir / "metrics.csv"), _rows(dep_dir / "metrics.csv")
    assert len(sim_rows) == len(dep_rows) == 1
    for s_row, d_row in zip(sim_rows, dep_rows):
        for col in EXACT_COLUMNS:
            assert s_row[col] == d_row[col], col
        for col in FLOAT_COLUMNS:  # same seed: bit-identical, not just close (issue #9 item 5)
            assert d_row[col] == s_row[col], col
