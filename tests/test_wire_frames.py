"""Frames between the relay and the worker (flwr_semcom/runtime/wire.py): a large frame to a
peer that is slow to read arrives whole. Regression: ``send_frame`` used ``sendall`` under the
1 s socket timeout that the preceding ``recv_frame`` had set, so a pass-end frame (the full
client state, ~90 MB) to a busy peer failed with "timed out" on a loaded machine."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from flwr_semcom.runtime.wire import recv_frame, send_frame


def test_a_big_frame_to_a_slow_reader_after_a_recv_arrives_whole() -> None:
    a, b = socket.socketpair()
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB: far above the socket buffers
    got: dict[str, object] = {}

    def peer() -> None:
        send_frame(b, {"kind": "hello"})
        time.sleep(2.5)  # busy: reads nothing for 2.5 s
        got["frame"] = recv_frame(b, 60.0)

    th = threading.Thread(target=peer)
    th.start()
    try:
        assert recv_frame(a, 10.0) == {"kind": "hello"}  # leaves a 1 s timeout on `a`
        t0 = time.monotonic()
        send_frame(a, {"state": payload})
        assert time.monotonic() - t0 > 1.0  # it did wait for the reader beyond 1 s
    finally:
        th.join(timeout=30.0)
        a.close()
        b.close()
    assert got["frame"] == {"state": payload}


def test_a_reader_that_never_reads_times_out_and_a_gone_peer_is_reported() -> None:
    a, b = socket.socketpair()
    try:
        with pytest.raises(TimeoutError, match="did not take the frame in time"):
            send_frame(a, b"x" * (8 << 20), timeout=1.5)
        with pytest.raises(ConnectionError, match="the peer process is gone"):
            send_frame(a, b"y" * (8 << 20), alive=lambda: False)
    finally:
        a.close()
        b.close()
