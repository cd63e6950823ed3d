"""What one pass-end persist of a ResNet-18 client's state costs, leg by leg (issue #19).

At the end of every split pass the warm worker writes the client's full state (weights and
SGD momentum, ~90 MB for ResNet-18) into ``context.state`` (docs/split.md, *Persist points*);
in the simulation it then travels worker → relay (the Ray actor, one frame over the Unix
socket) → driver (Ray's return of the ``Context``), and with the next message driver → actor
again. This measures each leg alone, on the real records (:mod:`flwr_semcom.split.state`) and
the real frames (:mod:`flwr_semcom.runtime.wire`), median and min / max of ``--repeats``:

- ``records_s``: ``module_record`` + ``optimizer_records`` (tensors → Flower ``Array`` bytes);
- ``frame_s``: one frame of those records from a second process to this one
  (``send_frame`` → ``recv_frame``: pickle, socket, unpickle);
- ``ray_return_s``: a Ray actor returns a ``Context`` holding them (serialise, object store,
  deserialise in the driver), against ``ray_return_empty_s`` for an empty one;
- ``ray_send_s``: the driver sends that ``Context`` to the actor, which returns it unchanged
  (two legs, as a message after a pass end does until the next exchange drops the records).

Usage::

    python benchmarks/persist_legs.py --repeats 5   # ~1 min
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "results" / "persist_legs.json"


def client_state() -> Any:
    """The records a pass end writes for one ResNet-18 client after one SGD step."""
    import torch
    import torchvision
    from flwr.app import RecordDict

    from flwr_semcom.split.state import module_record, optimizer_records

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    arrays, meta = optimizer_records(opt)
    return RecordDict({"model": module_record(model), "optim": arrays, "optim_meta": meta})


def _sender(conn: socket.socket, repeats: int) -> None:
    import torch

    from flwr_semcom.runtime.wire import send_frame

    torch.set_num_threads(1)
    state = client_state()
    conn.sendall(b"r")  # built: the timing starts after this
    for _ in range(repeats):
        conn.recv(1)  # the receiver is ready
        send_frame(conn, {"state": state})


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
    }


def measure(repeats: int) -> dict[str, Any]:
    import ray
    import torch
    from flwr.app import Context, RecordDict

    from flwr_semcom.accounting import record_nbytes
    from flwr_semcom.runtime.wire import recv_frame
    from flwr_semcom.split.state import module_record, optimizer_records

    torch.set_num_threads(1)
    state = client_state()
    nbytes = sum(record_nbytes(r) for r in state.values())
    out: dict[str, Any] = {"state_mb": round(nbytes / 1e6, 1)}

    import torchvision

    model = torchvision.models.resnet18()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        module_record(model)
        optimizer_records(opt)
        times.append(time.perf_counter() - t0)
    out["records_s"] = _stats(times)

    mine, theirs = socket.socketpair()
    proc = mp.get_context("spawn").Process(target=_sender, args=(theirs, repeats))
    proc.start()
    mine.recv(1)  # the sender has started and built its records
    times = []
    for _ in range(repeats):
        mine.sendall(b"x")
        t0 = time.perf_counter()
        recv_frame(mine, 600.0)
        times.append(time.perf_counter() - t0)
    proc.join(timeout=60)
    out["frame_s"] = _stats(times)  # includes the sender's pickling: it starts after "x"

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote(num_cpus=1)
        class Actor:
            def __init__(self) -> None:
                self.state = client_state()

            def run(self, ctx: Any, fill: bool) -> Any:
                if fill:
                    ctx.state = self.state
                return ctx

        actor = Actor.remote()  # type: ignore[attr-defined]
        empty = Context(1, 1, {}, RecordDict(), {})
        ray.get(actor.run.remote(empty, False))
        legs: dict[str, list[float]] = {"ray_return_empty_s": [], "ray_return_s": []}
        legs["ray_send_s"] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ray.get(actor.run.remote(empty, False))
            legs["ray_return_empty_s"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            full = ray.get(actor.run.remote(empty, True))
            legs["ray_return_s"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ray.get(actor.run.remote(full, False))
            legs["ray_send_s"].append(time.perf_counter() - t0)
        out.update({k: _stats(v) for k, v in legs.items()})
    finally:
        ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    os.environ.setdefault("RAY_TMPDIR", "/tmp/ray")
    load = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    report = {
        "benchmark": "benchmarks/persist_legs.py",
        "command": "python benchmarks/persist_legs.py " + " ".join(sys.argv[1:]),
        "what": "one pass-end persist of a ResNet-18 client's state (weights + SGD momentum), "
        "leg by leg; median, min, max over the repeats (module docstring)",
        "load_average_before": load,
        **measure(args.repeats),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "benchmark_wall_s": round(time.perf_counter() - t0, 1),
    }
    from flwr_semcom.accounting import atomic_write

    with atomic_write(args.out) as fh:
        json.dump(report, fh, indent=1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
