#!/usr/bin/env python3
"""``flwr-clientapp`` as the SuperNode's SuperExec starts it, for every message: hand the launch
to the node's fork server (deploy/clientapp_launcher.py, socket ``$SEMCOM_CLIENTAPP_LAUNCHER``)
with this process's arguments, environment, working directory and standard streams, then exit;
when no server answers, become Flower's own ``flwr-clientapp`` (``$SEMCOM_FLWR_CLIENTAPP``).
Standard library only. ``deploy/supernode.sh --worker`` installs it as ``flwr-clientapp`` in a
folder ahead of Flower's on the SuperNode's ``PATH``.
"""

import json
import os
import socket
import struct
import sys


def _launch(path: str) -> bool:
    request = {"argv": ["flwr-clientapp", *sys.argv[1:]], "env": dict(os.environ)}
    request["cwd"] = os.getcwd()
    data = json.dumps(request).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10.0)
        sock.connect(path)
        payload = struct.pack(">Q", len(data)) + data
        sent = socket.send_fds(sock, [payload], [0, 1, 2])
        sock.sendall(payload[sent:])
        return bool(json.loads(sock.recv(4096) or b"{}").get("pid"))


def main() -> None:
    path = os.environ.get("SEMCOM_CLIENTAPP_LAUNCHER", "")
    try:
        if path and _launch(path):
            return
    except (OSError, ValueError):
        pass
    real = os.environ.get("SEMCOM_FLWR_CLIENTAPP", "")
    if not real:
        sys.exit("flwr-clientapp shim: no launcher answered and SEMCOM_FLWR_CLIENTAPP is unset")
    os.execv(real, [real, *sys.argv[1:]])


if __name__ == "__main__":
    main()
