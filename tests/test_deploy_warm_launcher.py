"""The ``flwr-clientapp`` fork server and its shim (deploy/clientapp_launcher.py,
deploy/flwr_clientapp_shim.py), as ``deploy/supernode.sh --worker`` installs them: a launch
through the shim runs Flower's own ``flwr-clientapp`` entry point in a child forked from the
server, with the shim's arguments, streams, working directory and environment; without a
server the shim becomes Flower's executable; the server is private and leaves with its owner.
The loopback deployment that uses them: tests/test_deploy_warm.py."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
REAL = str(Path(sys.executable).parent / "flwr-clientapp")


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="semla-"))  # short: socket paths have <= 107 bytes
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _wait_for(check: object, what: str, t: float = 60.0) -> None:
    deadline = time.monotonic() + t
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _server(folder: Path, owner: int) -> subprocess.Popen[bytes]:
    log = open(folder / "launcher.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, str(DEPLOY / "clientapp_launcher.py"), "--socket", str(folder / "l.sock")]
        + ["--owner-pid", str(owner)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _wait_for(lambda: (folder / "l.sock").exists() or proc.poll() is not None, "no socket")
    assert proc.poll() is None, (folder / "launcher.log").read_text()
    return proc


def _shim(folder: Path) -> Path:
    """The shim as supernode.sh writes it: this venv's python, ``-IS``."""
    shim = folder / "flwr-clientapp"
    text = (DEPLOY / "flwr_clientapp_shim.py").read_text().split("\n", 1)[1]
    shim.write_text(f"#!{sys.executable} -IS\n{text}")
    shim.chmod(0o700)
    return shim


def _launch(
    folder: Path, sock: Path, *args: str, until: str = "usage: flwr-clientapp"
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the shim; return its result and what the launched process printed (once ``until``
    is in it: a forked child may still be writing when the shim has left)."""
    out = folder / "out.txt"
    out.unlink(missing_ok=True)
    env = dict(os.environ, SEMCOM_CLIENTAPP_LAUNCHER=str(sock), SEMCOM_FLWR_CLIENTAPP=REAL)
    with open(out, "w") as fh:
        res = subprocess.run(  # noqa: S603
            [str(_shim(folder)), *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
            text=True,
            timeout=60,
        )
    _wait_for(lambda: until in out.read_text(), f"no {until!r} in the output", 60)
    return res, out.read_text()


def test_a_launch_through_the_shim_is_forked_from_the_server(folder: Path) -> None:
    server = _server(folder, os.getpid())
    try:
        assert stat.S_IMODE((folder / "l.sock").stat().st_mode) == 0o600
        # Flower 1.41's object pulls retry from 0.05 s in the children (not from 1 s)
        backoff = "{'initial_backoff': 0.05, 'backoff_cap': 1.0}"
        done = "for pull_objects, pull_and_inflate_object_from_tree"
        assert (
            f"launcher: object pull backoff {backoff} {done}"
            in (folder / "launcher.log").read_text()
        )
        res, text = _launch(folder, folder / "l.sock", "--help")
        assert res.returncode == 0
        assert text.startswith("usage: flwr-clientapp [-h] [--runtime-api-address")
        # an unknown argument: Flower's parser in the child complains on the shim's stderr
        res, text = _launch(folder, folder / "l.sock", "--token", "t", "-x", until="-x\n")
        assert res.returncode == 0
        assert text.rstrip().endswith("flwr-clientapp: error: unrecognized arguments: -x")
        assert server.poll() is None  # the server survives its children's exits
    finally:
        server.terminate()
        server.wait(10)
    assert not (folder / "l.sock").exists()


def test_without_a_server_the_shim_becomes_flowers_flwr_clientapp(folder: Path) -> None:
    res, text = _launch(folder, folder / "none.sock", "--help")
    assert res.returncode == 0 and text.startswith("usage: flwr-clientapp")
    env = {"PATH": os.environ["PATH"], "SEMCOM_CLIENTAPP_LAUNCHER": str(folder / "none.sock")}
    bare = subprocess.run(  # noqa: S603
        [str(_shim(folder)), "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert bare.returncode == 1
    assert "no launcher answered and SEMCOM_FLWR_CLIENTAPP is unset" in bare.stderr


def test_the_server_leaves_with_its_owner(folder: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # noqa: S603
    server = _server(folder, owner.pid)
    try:
        owner.kill()
        owner.wait(10)
        assert server.wait(15) == 0
        assert not (folder / "l.sock").exists()
        assert (
            f"exiting (owner process {owner.pid} is gone)" in (folder / "launcher.log").read_text()
        )
    finally:
        owner.kill()
        server.kill()
        server.wait(10)


def test_children_install_a_fab_once_per_sha256(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from flwr.supernode.runtime import run_clientapp

    sys.path.insert(0, str(DEPLOY))
    try:
        import clientapp_launcher
    finally:
        sys.path.remove(str(DEPLOY))
    installs: list[str] = []

    def fake_install(fab: bytes, install_dir: Path | None = None, skip: bool = False) -> Path:
        digest = hashlib.sha256(fab).hexdigest()
        installs.append(digest)
        target = folder / "apps" / f"pub.app.1.0.{digest[:8]}"
        target.mkdir(parents=True, exist_ok=True)
        return target

    monkeypatch.setenv("FLWR_HOME", str(folder))
    monkeypatch.setattr(run_clientapp, "install_from_fab", fake_install)
    assert "not extracted again" in clientapp_launcher._reuse_installed_fabs()
    install = run_clientapp.install_from_fab
    first = install(b"fab one", skip_prompt=True)
    assert install(b"fab one", skip_prompt=True) == first  # reused: not installed again
    assert len(installs) == 1
    assert (first / clientapp_launcher.FAB_MARKER).read_text() == installs[0]
    other = install(b"fab two", skip_prompt=True)
    assert other != first and len(installs) == 2
    (first / clientapp_launcher.FAB_MARKER).write_text("0" * 64)  # a marker of another FAB
    install(b"fab one", skip_prompt=True)
    assert len(installs) == 3  # not trusted: installed as Flower does
