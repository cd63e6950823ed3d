"""``semcom-worker``: a long-lived process that holds one node's ClientApp state in memory.

It loads a ClientApp (``--app module:attribute``, default the bundled
``flwr_semcom.client_app:app``; its ``prepare()``, if it has one, runs before serving), marks
itself a worker (:func:`~.relay.set_worker_mode`: the split handlers keep state warm,
docs/split.md "Warm client state"), listens on a Unix socket (0600 in a 0700 directory; no TCP
port) and runs each ``(message, context)`` it receives from
a relay (:mod:`.relay`) with the app's normal dispatch (mods and handlers), answering with the
reply and the updated ``context.state``. One call at a time: a node handles one message at a
time.

Deployment: ``deploy/supernode.sh --worker DIR`` starts one beside each SuperNode::

    semcom-worker --socket DIR/worker.sock --owner-pid <SuperNode pid> --session <random id>

and gives the SuperNode ``--node-config "... worker-socket='DIR/worker.sock'
worker-session='<id>'"``. Simulation: the relay starts the workers itself (run config
``warm-clients``), bound to one run and node (``--run-id``, ``--node-id``). A worker bound to a
session, run or node says so in its hello and refuses calls of others (the relay refuses it
first, :mod:`.relay`). It refuses to start where a live worker already listens.

The worker exits when its owner process is gone (``--owner-pid``: checked every second;
``--owner-fd``: at once, on EOF of a pipe the owner holds — how the relay starts it), after
``--idle-timeout`` seconds without a message (0: never), or on SIGTERM; it removes its socket.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
from logging import DEBUG, ERROR, INFO
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.common.logger import log

from flwr_semcom.runtime.relay import run_worker_hooks, set_worker_mode
from flwr_semcom.runtime.wire import (
    PROTOCOL,
    WorkerError,
    code_version,
    pid_alive,
    private_dir,
    recv_frame,
    send_frame,
)

__all__ = ["load_app", "main", "serve"]

_SO_PEERCRED = struct.Struct("3i")


def load_app(ref: str) -> ClientApp:
    """The ClientApp ``module:attribute``; ``ValueError`` (one line) if it is not one."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ValueError(f"--app {ref!r}: expected module:attribute")
    app = getattr(importlib.import_module(module), attr, None)
    if not isinstance(app, ClientApp):
        raise ValueError(f"--app {ref!r} is not a flwr ClientApp ({type(app).__name__})")
    return app


def _watch_pipe(fd: int) -> None:
    """Block on the owner's pipe; its EOF (the owner is gone) terminates this worker."""
    while os.read(fd, 1):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _SO_PEERCRED.size)
    return int(_SO_PEERCRED.unpack(creds)[1])


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else repr(err)}"


def _execute(app: ClientApp, request: dict[str, Any], bound: dict[str, Any]) -> dict[str, Any]:
    run_id, node_id, node_config, state, run_config = request["context"]
    for key, have in (("run_id", run_id), ("node_id", node_id)):
        if bound.get(key) is not None and int(bound[key]) != int(have):
            error = f"worker of {key.replace('_', ' ')} {bound[key]} refused {have}"
            log(ERROR, "worker: %s", error)
            return {"ok": False, "error": error, "exc": None}
    context = Context(run_id, node_id, node_config, state, run_config)
    message = request["message"]
    t0 = time.perf_counter()
    try:
        run_worker_hooks(message, context)
        reply = app(message, context)
        log(DEBUG, "worker: %s in %.3f s", message.metadata.message_type, time.perf_counter() - t0)
    except Exception as err:  # the relay re-raises it in the ClientApp process
        log(ERROR, "worker: %s", _one_line(err))
        try:
            exc: BaseException | None = pickle.loads(pickle.dumps(err))
        except Exception:  # an exception that does not survive pickling: its text only
            exc = None
        return {"ok": False, "error": _one_line(err), "exc": exc}
    return {"ok": True, "reply": reply, "state": context.state}


def _handle(app: ClientApp, conn: socket.socket, bound: dict[str, Any]) -> None:
    if _peer_uid(conn) != os.getuid():
        log(ERROR, "worker: refused a connection of another user")
        return
    hello = {"protocol": PROTOCOL, "code": code_version(), "pid": os.getpid(), "bound": bound}
    try:
        send_frame(conn, hello)
        request = recv_frame(conn, 60.0)
    except ConnectionError:  # a probe (the relay's sweep): connected and left
        return
    if not isinstance(request, dict) or request.get("kind") != "call":
        return
    t0 = time.perf_counter()
    answer = _execute(app, request, bound)
    send_frame(conn, answer)
    log(DEBUG, "worker: call answered in %.3f s", time.perf_counter() - t0)


def _listening(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def serve(
    app: ClientApp,
    path: Path,
    *,
    owner_pid: int = 0,
    idle_timeout: float = 0.0,
    bound: dict[str, Any] | None = None,
) -> str:
    """Serve ``app`` on the Unix socket ``path`` until the owner is gone or idle; return why.
    ``bound``: ``session``/``run_id``/``node_id`` this worker serves only (``None``: any)."""
    private_dir(path.parent)
    if _listening(path):
        raise WorkerError(f"a worker already listens on {path}")
    # bind + listen under a temporary name, then rename: a client never sees the socket
    # file before it accepts connections (a connect between bind and listen is refused)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(str(tmp))
    finally:
        os.umask(old)
    os.chmod(tmp, 0o600)
    server.listen(8)
    os.replace(tmp, path)
    inode = path.stat().st_ino
    server.settimeout(1.0)
    log(INFO, "worker %d: serving %s (code %s)", os.getpid(), path, code_version())
    last = time.monotonic()
    why = ""
    try:
        while not why:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                if owner_pid > 0 and not pid_alive(owner_pid):
                    why = f"owner process {owner_pid} is gone"
                elif idle_timeout > 0 and time.monotonic() - last > idle_timeout:
                    why = f"idle for {idle_timeout:g} s"
                continue
            with conn:
                try:
                    _handle(app, conn, bound or {})
                except (ConnectionError, TimeoutError, OSError, EOFError) as err:
                    log(ERROR, "worker: connection failed: %s", _one_line(err))
            last = time.monotonic()
    finally:
        server.close()
        try:
            if path.stat().st_ino == inode:
                path.unlink()
        except FileNotFoundError:
            pass
    log(INFO, "worker %d: exiting (%s)", os.getpid(), why)
    return why


def main(argv: list[str] | None = None) -> int:
    """``semcom-worker``: serve one node's ClientApp on a Unix socket."""
    parser = argparse.ArgumentParser(prog="semcom-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="flwr_semcom.client_app:app", help="module:attribute")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", type=Path, help="socket path (its directory: 0700)")
    where.add_argument("--node-home", type=Path, help="directory of <node-home>/worker.sock")
    parser.add_argument("--owner-pid", type=int, default=0, help="exit when it is gone")
    parser.add_argument("--owner-fd", type=int, default=-1, help="exit on EOF of this pipe")
    parser.add_argument("--idle-timeout", type=float, default=0.0, help="seconds; 0 = never")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--session", default=None, help="serve this SuperNode session only")
    parser.add_argument("--run-id", type=int, default=None, help="serve this run only")
    parser.add_argument("--node-id", type=int, default=None, help="serve this node only")
    args = parser.parse_args(argv)
    path = args.socket if args.socket is not None else args.node_home / "worker.sock"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.owner_fd >= 0:
        threading.Thread(target=_watch_pipe, args=(args.owner_fd,), daemon=True).start()
    set_worker_mode(True)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        app = load_app(args.app)
        prepare = getattr(app, "prepare", None)
        if callable(prepare):  # e.g. the bundled app imports its handlers (torch) now
            prepare()
    except (ImportError, ValueError) as err:
        log(ERROR, "semcom-worker: %s", _one_line(err))
        return 2
    bound = {"session": args.session, "run_id": args.run_id, "node_id": args.node_id}
    try:
        serve(
            app,
            path.expanduser(),
            owner_pid=args.owner_pid,
            idle_timeout=args.idle_timeout,
            bound=bound,
        )
    except WorkerError as err:
        log(ERROR, "semcom-worker: %s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
