"""slf_table1 through Flower's simulation engine (Ray), on the tiny config. Slow: ``-m slow``."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from test_slf import SMALL  # tests/ is on sys.path (pytest rootdir-relative import)

from flwr_semcom.slf.client import ACTIONS
from simulations.server_app import main as server_main

pytestmark = pytest.mark.slow


def test_slf_table1_in_simulation(tmp_path: Path) -> None:
    from flwr.simulation import run_simulation

    run_config: dict[str, bool | float | int | str] = {
        "experiment": "slf_table1",
        "overrides": f"{SMALL} paths.output_dir={tmp_path}",
    }

    # run_simulation passes an empty run config (FLOWER_NOTES §2.7): hand ours to both sides
    def with_run_config(msg: Message, ctx: Context, call_next: Callable[..., Message]) -> Message:
        inner = Context(ctx.run_id, ctx.node_id, ctx.node_config, ctx.state, dict(run_config))
        return call_next(msg, inner)

    client_app = ClientApp(mods=[with_run_config])
    for message_type, handler in ACTIONS.items():
        kind, _, action = message_type.partition(".")
        getattr(client_app, kind)(action)(handler)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        context.run_config.update(run_config)
        server_main(grid, context)

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=2,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    tables = list(tmp_path.glob("slf_table1/*/table1.csv"))
    assert len(tables) == 1
    with open(tables[0]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 24
    assert all(
        int(r["upload_bytes"]) == 4 * int(r["unfrozen_params"])
        for r in rows
        if r["method"] == "slf"
    )
