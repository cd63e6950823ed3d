"""A tiny ClientApp for tests/test_worker.py, loaded by a worker process (``--app``)."""

from __future__ import annotations

import os
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from flwr_semcom.runtime.relay import in_worker

app = ClientApp()
_calls = 0  # lives as long as the process: counts the calls a worker served


@app.query("count")
def count(msg: Message, context: Context) -> Message:
    global _calls
    _calls += 1
    n = int(context.state.config_records["c"]["n"]) + 1 if "c" in context.state else 1  # type: ignore[arg-type]
    context.state["c"] = ConfigRecord({"n": n})
    info = {"n": n, "calls": _calls, "pid": os.getpid(), "worker": in_worker()}
    return Message(RecordDict({"info": ConfigRecord(info)}), reply_to=msg)  # type: ignore[arg-type]


@app.query("fail")
def fail(msg: Message, context: Context) -> Message:
    raise ValueError("boom: bad input")


@app.query("sleep")
def sleep(msg: Message, context: Context) -> Message:
    time.sleep(30)
    return Message(RecordDict(), reply_to=msg)
