"""Fork server for Flower's per-message ``flwr-clientapp`` processes (issue #16, item 2).

Flower 1.41's SuperExec starts ``flwr-clientapp`` by name for every message, and that process
spends ~1-2 s importing Flower (``flwr.supernode.cli`` pulls in the whole SuperNode) before it
asks the SuperNode for its message. This server imports that code once and forks a child per
launch; the child runs Flower's own ``flwr-clientapp`` entry point with the launch's arguments,
environment, working directory and standard streams. ``deploy/flwr_clientapp_shim.py``,
installed as ``flwr-clientapp`` ahead of Flower's on the SuperNode's ``PATH`` by
``deploy/supernode.sh --worker``, hands each launch here and falls back to Flower's executable
when no server answers.

It imports flwr and the standard library only, never the app: a child loads the ClientApp from
the run's FAB as Flower's own process does. Unix socket 0600 (its folder: 0700, checked by the
script), peer uid checked, no network port; it exits when ``--owner-pid`` (the SuperNode) is
gone or on SIGTERM, removing its socket. Children are reaped by the kernel (SIGCHLD ignored).

    python deploy/clientapp_launcher.py --socket DIR/launcher.sock --owner-pid PID
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import traceback
from pathlib import Path
from typing import Any

_HEADER = struct.Struct(">Q")
_CREDS = struct.Struct("3i")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One launch request: a length-prefixed JSON object and the caller's stdin/out/err."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    buf = bytearray(data)
    while len(buf) < _HEADER.size or len(buf) < _HEADER.size + _HEADER.unpack(buf[:8])[0]:
        chunk = conn.recv(1 << 16)
        if not chunk:
            for fd in fds:
                os.close(fd)
            raise ConnectionError("launch request cut short")
        buf += chunk
    (size,) = _HEADER.unpack(buf[:8])
    return json.loads(bytes(buf[8 : 8 + size])), list(fds)


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become the launched ``flwr-clientapp`` process; never returns."""
    code = 1
    try:
        for target, fd in zip((0, 1, 2), fds, strict=False):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        from flwr.supernode.cli import flwr_clientapp

        flwr_clientapp()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report anything, then leave
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _handle(server: socket.socket, conn: socket.socket) -> None:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
    if _CREDS.unpack(creds)[1] != os.getuid():
        print("launcher: refused a connection of another user", file=sys.stderr, flush=True)
        return
    conn.settimeout(10.0)
    request, fds = _receive(conn)
    pid = os.fork()
    if pid == 0:
        server.close()
        conn.close()
        _child(request, fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(json.dumps({"pid": pid}).encode())


#: Flower 1.41's ClientApp retries pulling an object the SuperNode does not have yet after 1 s,
#: 2 s, ... (``PULL_INITIAL_BACKOFF``). A forked child asks ~0.1 s after the task appears, often
#: before the SuperNode has received all of the message's objects from the SuperLink (measured:
#: a 0.9-1.1 s wait in most split exchanges), so the children retry from 0.05 s, capped at 1 s.
PULL_BACKOFF = {"initial_backoff": 0.05, "backoff_cap": 1.0}


def _short_pull_backoff() -> str:
    """Set :data:`PULL_BACKOFF` as the defaults of Flower's object pulls (inherited by every
    child); returns what was done (one line for the log)."""
    from flwr.supercore.inflatable import inflatable_utils

    done = []
    for name in ("pull_objects", "pull_and_inflate_object_from_tree"):
        func = getattr(inflatable_utils, name, None)
        defaults = getattr(func, "__kwdefaults__", None)
        if isinstance(defaults, dict) and set(PULL_BACKOFF) <= set(defaults):
            defaults.update(PULL_BACKOFF)
            done.append(name)
    return f"object pull backoff {PULL_BACKOFF} for {', '.join(done) or 'nothing (not found)'}"


#: Written beside an installed FAB by the first child that installs it: its full sha256.
FAB_MARKER = ".semcom-fab-sha256"


def _reuse_installed_fabs() -> str:
    """Flower 1.41's ClientApp extracts the whole FAB and checks every file's hash for every
    message, then finds it installed already (0.1-0.6 s per message here). Children skip that
    when the FAB with the same sha256 is installed (:data:`FAB_MARKER` written by the first
    install); the first one installs as Flower does. Returns a line for the log."""
    import hashlib

    from flwr.common.config import get_flwr_home
    from flwr.common.constant import APP_DIR, FAB_HASH_TRUNCATION
    from flwr.supernode.runtime import run_clientapp

    real = getattr(run_clientapp, "install_from_fab", None)
    if real is None:
        return "FAB reuse: nothing to wrap (not found)"

    def install_once(fab_file: Any, install_dir: Any = None, skip_prompt: bool = False) -> Any:
        if not isinstance(fab_file, bytes) or install_dir is not None:
            return real(fab_file, install_dir, skip_prompt)
        digest = hashlib.sha256(fab_file).hexdigest()
        for folder in (get_flwr_home() / APP_DIR).glob(f"*.{digest[:FAB_HASH_TRUNCATION]}"):
            marker = folder / FAB_MARKER
            if marker.is_file() and marker.read_text() == digest:
                return folder
        folder = real(fab_file, install_dir, skip_prompt)
        (Path(folder) / FAB_MARKER).write_text(digest)
        return folder

    run_clientapp.install_from_fab = install_once  # type: ignore[assignment]
    return "FAB reuse: an installed FAB of the same sha256 is not extracted again"


def serve(path: Path, owner_pid: int) -> str:
    """Serve launches on ``path`` until ``owner_pid`` is gone; return why it stopped."""
    from flwr.supernode.cli import flwr_clientapp  # noqa: F401 - what every child needs

    print(f"launcher: {_short_pull_backoff()}", file=sys.stderr, flush=True)
    print(f"launcher: {_reuse_installed_fabs()}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(str(tmp))
    finally:
        os.umask(old)
    server.listen(8)
    os.replace(tmp, path)  # visible only once it accepts
    inode = path.stat().st_ino
    server.settimeout(1.0)
    print(f"launcher {os.getpid()}: serving {path}", file=sys.stderr, flush=True)
    why = ""
    try:
        while not why:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                if owner_pid > 0 and not _alive(owner_pid):
                    why = f"owner process {owner_pid} is gone"
                continue
            with conn:
                try:
                    _handle(server, conn)
                except (OSError, ValueError) as err:
                    print(f"launcher: launch failed: {err}", file=sys.stderr, flush=True)
    finally:
        server.close()
        try:
            if path.stat().st_ino == inode:
                path.unlink()
        except FileNotFoundError:
            pass
    print(f"launcher {os.getpid()}: exiting ({why})", file=sys.stderr, flush=True)
    return why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fork server for flwr-clientapp launches")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--owner-pid", type=int, default=0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.socket, args.owner_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
