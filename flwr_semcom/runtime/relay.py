"""The ClientApp side of a per-node worker: worker mode, the wire format, and the relay mod.

A **per-node worker** (:mod:`flwr_semcom.runtime.worker`) is a long-lived process that holds
one node's state in memory (docs/split.md "Warm client state"). Flower never keeps a process
per node: in simulation a node's messages hop between Ray actors, in deployment every message
gets a fresh ``flwr-clientapp`` process (../shared/FLOWER_NOTES.md §3, §9). The **relay**
(:func:`relay_mod`, a Flower client mod) sends each ``(message, context)`` to the node's worker
over a Unix socket and copies the worker's reply and ``context.state`` back; inside the worker
the same app runs with :func:`in_worker` true, so its handlers may keep state warm.

Where the worker is:

- deployment: node config ``worker-socket`` (a path; ``semcom-worker`` started beside the
  SuperNode by ``deploy/supernode.sh --worker``, with node config ``worker-session``, a random
  id of that SuperNode start: a worker of another session is refused). The bundled app relays
  *every* message there (:func:`relay_to_node_worker`), so the per-message ``flwr-clientapp``
  process imports no torch;
- simulation, in-process grids: run config ``warm-clients = true`` (or ``SEMCOM_WARM_CLIENTS=1``
  when unset): the relay starts the node's worker on first use (owned by the relaying process;
  it exits when that process is gone) under a private directory (:func:`worker_dir`).

Wire format (:mod:`.wire`): frames of an 8-byte big-endian length and a pickle. The worker
speaks first (``hello``: protocol, code version, pid, and what it is bound to: a SuperNode
session, a run, a node); a worker of other code, or bound to another session, run or node, is
refused with one line. The socket file is 0600 in a 0700 directory, and the worker serves only
its own user (peer credentials), so pickles come from this user only. This module imports only
the standard library and flwr.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from logging import DEBUG, WARNING
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.common.logger import log

from flwr_semcom.runtime.wire import (
    PROTOCOL,
    NoWorkerError,
    RefusedWorkerError,
    WorkerError,
    code_version,
    pid_alive,
    private_dir,
    recv_frame,
    send_frame,
)

__all__ = [
    "NODE_KEY",
    "PROTOCOL",
    "SESSION_KEY",
    "NoWorkerError",
    "RefusedWorkerError",
    "WorkerError",
    "call_worker",
    "code_version",
    "has_live_state",
    "in_worker",
    "on_worker_call",
    "recv_frame",
    "relay_mod",
    "relay_to_node_worker",
    "run_worker_hooks",
    "send_frame",
    "set_worker_mode",
    "sweep",
    "worker_dir",
    "worker_socket",
]

#: Run-config key / environment variable that switch warm clients on in simulation.
RUN_KEY, ENV_KEY, NODE_KEY = "warm-clients", "SEMCOM_WARM_CLIENTS", "worker-socket"
#: Node-config key: the session id of the worker started with this SuperNode.
SESSION_KEY = "worker-session"
#: Whether warm clients are on when neither the run config nor the environment says: in the
#: simulation engine's Ray actors (measured faster, bit-identical: docs/split.md), not in other
#: processes (an in-process grid's caller, a deployment ClientApp process).
DEFAULT_WARM_IN_SIMULATION = True
SPAWN_TIMEOUT_S = 180.0
CALL_TIMEOUT_S = 6 * 3600.0

_worker_mode = False
_hooks: list[Callable[[Message, Context], None]] = []
_spawned: dict[str, subprocess.Popen[bytes]] = {}
_owner_pipes: list[int] = []  # write ends, open while this process lives (workers watch them)


def in_worker() -> bool:
    """True in a per-node worker process (set by the worker at start)."""
    return _worker_mode


def set_worker_mode(on: bool) -> None:
    """Mark this process as a per-node worker (``on``) or not."""
    global _worker_mode
    _worker_mode = bool(on)


def on_worker_call(hook: Callable[[Message, Context], None]) -> None:
    """Register ``hook(message, context)``, called by the worker before every message (e.g.
    to write live state into ``context.state`` before a handler that reads the records)."""
    if hook not in _hooks:
        _hooks.append(hook)


def run_worker_hooks(message: Message, context: Context) -> None:
    """Call the registered hooks (the worker does, before handing ``message`` to the app)."""
    for hook in _hooks:
        hook(message, context)


# ---------------------------------------------------------------------------- paths
def worker_dir() -> Path:
    """The private directory of spawned workers' sockets: ``$SEMCOM_WORKER_DIR`` or
    ``<tmp>/semcom-workers-<uid>``; created 0700, refused if another user owns it or others
    may enter it."""
    path = Path(
        os.environ.get("SEMCOM_WORKER_DIR")
        or Path(tempfile.gettempdir()) / f"semcom-workers-{os.getuid()}"
    )
    private_dir(path)
    return path


def worker_socket(run_id: int, node_id: int) -> Path:
    """The socket of the spawned worker of ``node_id`` in run ``run_id``."""
    return worker_dir() / f"{run_id}-{node_id}.sock"


# ---------------------------------------------------------------------------- relay
def _switch(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "none"):
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{RUN_KEY}: invalid value {value!r}; expected true or false")


def _target(context: Context) -> tuple[Path, bool] | None:
    """(socket, spawn) of this node's worker, or ``None``: handle the message here (cold)."""
    wanted = _switch(context.run_config.get(RUN_KEY, ""))
    if wanted is False:
        return None
    node_socket = str(context.node_config.get(NODE_KEY, ""))
    if node_socket:
        return Path(node_socket), False
    if wanted is None:
        wanted = _switch(os.environ.get(ENV_KEY, ""))
    if wanted is None:
        wanted = DEFAULT_WARM_IN_SIMULATION and _in_ray_actor()
    if not wanted:
        return None
    if Path(sys.argv[0]).name == "flwr-clientapp":  # lives for one message: cannot own one
        return None
    return worker_socket(context.run_id, context.node_id), True


def _in_ray_actor() -> bool:
    """True in a Ray worker process (the simulation engine's actors), without importing ray."""
    worker = sys.modules.get("ray._private.worker")
    mode = getattr(getattr(worker, "global_worker", None), "mode", None)
    return worker is not None and mode == getattr(worker, "WORKER_MODE", 1)


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10.0)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return sock


def _threads() -> int:
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 1


def sweep(directory: Path, min_age_s: float = 60.0) -> int:
    """Remove the files of dead workers from ``directory`` (a socket older than ``min_age_s``
    that refuses connections, with its ``.lock`` and ``.log``: Ray kills an actor's child
    processes with SIGKILL when the simulation ends, so they cannot clean up); return how many
    sockets were removed."""
    removed = 0
    for sock_path in directory.glob("*.sock"):
        try:
            if time.time() - sock_path.lstat().st_mtime < min_age_s:
                continue
        except FileNotFoundError:
            continue
        sock = _connect(sock_path)
        if sock is not None:
            sock.close()
            continue
        for suffix in (".sock", ".lock", ".log"):
            sock_path.with_suffix(suffix).unlink(missing_ok=True)
        removed += 1
    return removed


def _spawn(path: Path, app_ref: str, context: Context) -> socket.socket:
    """Start the worker of ``path`` (under a lock: one spawner per node) and connect."""
    sweep(path.parent)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _connect(path)
        if sock is not None:
            return sock
        path.unlink(missing_ok=True)
        log_path = path.with_suffix(".log")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        cmd = [sys.executable, "-m", "flwr_semcom.runtime.worker", "--app", app_ref]
        cmd += ["--socket", str(path), "--owner-pid", str(os.getpid())]
        cmd += ["--threads", str(_threads()), "--idle-timeout", "3600"]
        cmd += ["--run-id", str(context.run_id), "--node-id", str(context.node_id)]
        watch, keep = os.pipe()  # EOF on `watch` tells the worker at once that we are gone
        cmd += ["--owner-fd", str(watch)]
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=env,
                start_new_session=True, pass_fds=(watch,),
            )  # fmt: skip
        except BaseException:
            os.close(keep)
            raise
        finally:
            os.close(fd)
            os.close(watch)
        _owner_pipes.append(keep)
        _spawned[str(path)] = proc
        deadline = time.monotonic() + SPAWN_TIMEOUT_S
        while time.monotonic() < deadline:
            sock = _connect(path)
            if sock is not None:
                return sock
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise WorkerError(
                    f"worker for {path.name} exited at start (code {proc.returncode}): "
                    f"{tail[0] if tail else 'no output'} (log {log_path})"
                )
            time.sleep(0.05)
        proc.kill()
        raise WorkerError(f"worker for {path.name} did not listen within {SPAWN_TIMEOUT_S:g} s")


def _reap() -> None:
    for key, proc in list(_spawned.items()):
        if proc.poll() is not None:
            del _spawned[key]


def call_worker(
    path: Path,
    message: Message,
    context: Context,
    *,
    spawn_app: str | None = None,
    timeout: float = CALL_TIMEOUT_S,
) -> Message:
    """Run ``message`` on the worker at ``path``; copy its ``context.state`` into
    ``context``; return its reply. ``spawn_app``: start the worker (that app) if none
    listens. Failures raise :class:`WorkerError` (one line) or the handler's exception."""
    _reap()
    where = f"node {context.node_id}, {message.metadata.message_type}"
    sock = _connect(path)
    if sock is None and spawn_app is not None:
        sock = _spawn(path, spawn_app, context)
    if sock is None:
        raise NoWorkerError(f"{where}: no worker listens on {path} (start semcom-worker)")
    with sock:
        try:
            hello = recv_frame(sock, 120.0)  # the worker may be busy with a re-sent message
            refusal = _refusal(hello, context)
            if refusal:
                raise RefusedWorkerError(f"{where}: the worker on {path} {refusal}")
            pid = int(hello["pid"])
            ctx = (context.run_id, context.node_id, dict(context.node_config), context.state)
            request = {
                "kind": "call",
                "message": message,
                "context": (*ctx, dict(context.run_config)),
            }
            send_frame(sock, request, alive=lambda: pid_alive(pid))
            answer = recv_frame(sock, timeout, alive=lambda: pid_alive(pid))
        except (ConnectionError, TimeoutError, OSError, EOFError, pickle.PickleError) as err:
            raise WorkerError(
                f"{where}: the worker on {path} failed ({err}); its live state is lost"
            ) from None
    if not answer["ok"]:
        exc = answer.get("exc")
        if isinstance(exc, BaseException):
            raise exc
        raise WorkerError(f"{where}: {answer['error']}")
    state = answer["state"]
    for key in [k for k in context.state if k not in state]:
        del context.state[key]
    for key, record in state.items():
        context.state[key] = record
    reply: Message = answer["reply"]
    return reply


def _refusal(hello: dict[str, Any], context: Context) -> str:
    """Why the worker that said ``hello`` may not serve ``context`` (``""``: it may)."""
    if hello.get("protocol") != PROTOCOL or hello.get("code") != code_version():
        return (
            f"runs code {hello.get('code')} (protocol {hello.get('protocol')}), this ClientApp "
            f"{code_version()} (protocol {PROTOCOL}); restart the worker with this code"
        )
    bound = hello.get("bound") or {}
    session = str(context.node_config.get(SESSION_KEY, ""))
    if session and bound.get("session") != session:
        return (
            f"belongs to SuperNode session {bound.get('session') or '(none)'}, this node's is "
            f"{session} (a stale worker); restart it with the SuperNode"
        )
    for key, have in (("run_id", context.run_id), ("node_id", context.node_id)):
        if bound.get(key) is not None and int(bound[key]) != int(have):
            return f"serves {key.replace('_', ' ')} {bound[key]} only, not {have} (a stale worker)"
    return ""


def relay_to_node_worker(message: Message, context: Context) -> Message | None:
    """Run ``message`` on the worker the node config names (``worker-socket``; deployment) and
    return its reply; ``None`` when none is named, warm clients are off (run config
    ``warm-clients = false``) or this process is the worker. A named worker that is not
    listening (it died) or is refused (other code, another session: stale) gives ``None`` and
    one warning line: the caller handles the message itself from ``context.state`` (cold),
    which fails with one line if the worker held state that ``context.state`` lacks."""
    node_socket = str(context.node_config.get(NODE_KEY, ""))
    if in_worker() or not node_socket or _switch(context.run_config.get(RUN_KEY, "")) is False:
        return None
    try:
        t0 = time.perf_counter()
        reply = call_worker(Path(node_socket), message, context)
        log(DEBUG, "relay: worker answered in %.3f s", time.perf_counter() - t0)
        return reply
    except (NoWorkerError, RefusedWorkerError) as err:
        log(WARNING, "%s; handling the message in this process (cold)", err)
        return None


def has_live_state(context: Context) -> bool:
    """Whether a worker holds state of this node that ``context.state`` lacks: a config
    record with a ``stamp`` whose ``saved`` differs (warm state between persist points,
    :mod:`flwr_semcom.split.live`)."""
    for record in context.state.config_records.values():
        stamp = record.get("stamp")
        if stamp and record.get("saved") != stamp:
            return True
    return False


def relay_mod(
    app_ref: str, message_types: Collection[str] | None = None
) -> Callable[[Message, Context, Callable[..., Message]], Message]:
    """A client mod sending messages to this node's worker when one is configured (module
    docstring); else, and inside the worker, it passes them on.

    ``app_ref`` (``"module:attribute"``) is the ClientApp a spawned worker loads: the same
    handlers as the app this mod belongs to. ``message_types``: relay only these (those whose
    handlers keep state warm), and any other message only while the worker holds state that
    ``context.state`` lacks (:func:`has_live_state`); ``None``: relay every message."""
    types = None if message_types is None else frozenset(message_types)

    def relay(message: Message, context: Context, call_next: Callable[..., Message]) -> Message:
        if in_worker():
            return call_next(message, context)
        other = types is not None and message.metadata.message_type not in types
        if other and not has_live_state(context):
            return call_next(message, context)
        target = _target(context)
        if target is None:
            return call_next(message, context)
        path, spawn = target
        return call_worker(path, message, context, spawn_app=app_ref if spawn else None)

    return relay
