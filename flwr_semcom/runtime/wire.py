"""Wire format between a relay and a per-node worker (:mod:`.relay`, :mod:`.worker`): frames
of an 8-byte big-endian length and a pickle, the code version both sides must share, and the
private socket directory. Standard library only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import pickle
import socket
import struct
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "PROTOCOL",
    "NoWorkerError",
    "RefusedWorkerError",
    "WorkerError",
    "code_version",
    "pid_alive",
    "private_dir",
    "recv_frame",
    "send_frame",
]

PROTOCOL = 1
_HEADER = struct.Struct(">Q")
_MAX_FRAME = 1 << 36


class WorkerError(RuntimeError):
    """The node's worker cannot be reached, is of another code version, or died."""


class NoWorkerError(WorkerError):
    """No worker listens on the socket (none started, or it died)."""


class RefusedWorkerError(WorkerError):
    """The worker runs other code, or is bound to another session, run or node (stale)."""


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<flwr-semcom version>+<hash of the package's .py files>``: relay and worker must run
    the same code (a stale worker would compute with other code)."""
    try:
        version = importlib.metadata.version("flwr-semcom")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return f"{version}+{digest.hexdigest()[:16]}"


# ---------------------------------------------------------------------------- frames
class _Pickler(pickle.Pickler):
    """Pickles subclasses of ``str``/``int``/``float`` as the built-in type: a value such as
    ``torch.__version__`` (a ``TorchVersion``) must not make the receiver import torch (the
    relaying ClientApp process imports no torch)."""

    def reducer_override(self, obj: Any) -> Any:
        for base in (str, int, float):
            if isinstance(obj, base) and type(obj) is not base and not isinstance(obj, bool):
                return base, (base(obj),)
        return NotImplemented


#: Seconds a peer may take to accept one whole frame (a pass-end frame carries the full client
#: state, ~90 MB per ResNet-18 client, and the peer may be descheduled on a loaded box).
SEND_TIMEOUT_S = 600.0


def send_frame(
    sock: socket.socket,
    obj: Any,
    timeout: float = SEND_TIMEOUT_S,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Send ``obj`` as one frame (length + pickle); ``TimeoutError`` when the peer has not taken
    it all after ``timeout`` s, ``ConnectionError`` when ``alive()`` turns false.

    Sent in chunks with a 1 s socket timeout per try, never with ``sendall`` under whatever
    timeout the socket had: after :func:`recv_frame` that is 1 s for the *whole* frame, which
    a frame of tens of MB to a busy peer can exceed (the worker's pass-end state then failed
    with "timed out" / "connection closed" under load)."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    data = buf.getbuffer()
    deadline = time.monotonic() + timeout
    sock.settimeout(1.0)
    for part in (memoryview(_HEADER.pack(len(data))), data):
        view = part
        while len(view):
            try:
                sent = sock.send(view[: 1 << 22])
            except TimeoutError:
                _still_waiting(deadline, alive, "the peer did not take the frame in time")
                continue
            view = view[sent:]


def _still_waiting(deadline: float, alive: Callable[[], bool] | None, late: str) -> None:
    """After a 1 s socket timeout: ``TimeoutError(late)`` past ``deadline``, ``ConnectionError``
    when the peer process is gone, else return (try again)."""
    if time.monotonic() > deadline:
        raise TimeoutError(late) from None
    if alive is not None and not alive():
        raise ConnectionError("the peer process is gone") from None


def _recv_exact(
    sock: socket.socket, n: int, deadline: float, alive: Callable[[], bool] | None
) -> bytearray:
    """``n`` bytes read straight into one buffer of that size (no growing buffer and no copy
    at the end: a pass-end frame is ~90 MB per ResNet-18 client)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    sock.settimeout(1.0)
    while got < n:
        try:
            k = sock.recv_into(view[got:], min(n - got, 1 << 22))
        except TimeoutError:
            _still_waiting(deadline, alive, "no answer in time")
            continue
        if not k:
            raise ConnectionError("connection closed")
        got += k
    return buf


def recv_frame(sock: socket.socket, timeout: float, alive: Callable[[], bool] | None = None) -> Any:
    """Receive one frame; ``TimeoutError`` after ``timeout`` s, ``ConnectionError`` when the
    peer closes or ``alive()`` turns false (checked every second)."""
    deadline = time.monotonic() + timeout
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline, alive))
    if size > _MAX_FRAME:
        raise ConnectionError(f"frame of {size} bytes refused")
    return pickle.loads(_recv_exact(sock, size, deadline, alive))


# ---------------------------------------------------------------------------- paths
def private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) or check that it is ours and private."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise WorkerError(
            f"worker directory {path} must belong to uid {os.getuid()} with mode 0700 "
            f"(has uid {st.st_uid}, mode {oct(st.st_mode & 0o777)})"
        )


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0; a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
