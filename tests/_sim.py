"""Shared by the slow simulation tests: run the project's ServerApp through ``run_simulation``."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from flwr_semcom.client_app import Handler, make_app, register_actions
from simulations.server_app import main as server_main

RunConfig = Mapping[str, bool | float | int | str]


def run_config_mod(run_config: RunConfig) -> Callable[..., Message]:
    """A client mod handing ``run_config`` to the handlers: ``run_simulation`` passes an empty
    run config (FLOWER_NOTES §2.7) and a ClientApp may not mutate ``context.run_config``."""

    def with_run_config(msg: Message, ctx: Context, call_next: Callable[..., Message]) -> Message:
        inner = Context(ctx.run_id, ctx.node_id, ctx.node_config, ctx.state, dict(run_config))
        return call_next(msg, inner)

    return with_run_config


def bundled_client_app(run_config: RunConfig) -> ClientApp:
    """The bundled ClientApp (flwr_semcom/client_app.py) seeing ``run_config``."""
    return make_app(run_config)


def run_in_simulation(
    actions: Mapping[str, Handler],
    run_config: dict[str, bool | float | int | str],
    num_supernodes: int = 2,
) -> None:
    """Run ``simulations.server_app.main`` against a ClientApp serving ``actions``.

    ``actions`` maps ``"<kind>.<action>"`` (e.g. ``"train.pretrain"``) to its handler, as the
    ``ACTIONS`` tables of the client modules do; each SuperNode gets one CPU, no GPU.
    """
    from flwr.simulation import run_simulation

    # run_simulation passes an empty run config (FLOWER_NOTES §2.7): hand ours to both sides
    client_app = register_actions(ClientApp(mods=[run_config_mod(run_config)]), actions)
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        context.run_config.update(run_config)
        server_main(grid, context)

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=num_supernodes,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
