"""The Flower ServerApp: compose the config, run the selected experiment runner.

``flwr run .`` (or ``semcom-run``) → :func:`main` → ``config_from_run_config`` composes
``conf/`` for the run config's ``experiment``, ``overrides`` and shortcut keys (``snr-db``,
...; folded into ``overrides`` for the runner by
:func:`~flwr_semcom.run_config.canonical_run_config`) → the runner named by
``cfg.experiment.runner`` (``simulations/experiments/<runner>.py``, function
``run(grid, cfg, context) -> dict``) drives the strategies and writes the results folder. Any
error fails the run: ``flwr list`` shows ``finished:failed``.

Before the runner sends any message, the pre-flight checks of :mod:`simulations.preflight`
run on the server's host (channel ↔ task, the experiment's node count, device, output folder,
and in a simulation, where the ClientApps run on this host too, the data): for plain
``flwr run .``, which has no launcher, a problem fails the run with one
``configuration error: …`` line. ``reliability.resume`` of a run that already finished
returns at once, changing nothing. A runner that fails before it wrote any result leaves no
results folder (:func:`flwr_semcom.results.stub_folders_removed`).
"""

from __future__ import annotations

import importlib
import pkgutil
from logging import ERROR, INFO
from typing import Any

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.superlink.grid import InMemoryGrid  # the simulation engine's grid

# The ClientApp module first, as this module's first project import: in a simulation Flower
# loads the ClientApp in the main thread while this ServerApp runs in another. Two threads
# importing torchvision for the first time at once handed one of them a partially initialised
# module ("cannot import name 'datasets' from partially initialized module 'torchvision'",
# seen 2 of 3 times under load, when the ClientApp module imported torch). The module is now
# the light relaying app (no torch; the full app is built on its first cold message), so the
# main thread imports no torchvision while this thread does; keeping it first keeps the order.
import flwr_semcom.client_app  # noqa: F401  (must stay the first project import)
import simulations.experiments as experiments_pkg
from flwr_semcom.checkpoint import CheckpointError
from flwr_semcom.config import ConfigError, config_from_run_config
from flwr_semcom.results import stub_folders_removed
from flwr_semcom.run_config import canonical_run_config
from simulations import preflight

app = ServerApp()


def runner_names() -> list[str]:
    """The runners of ``simulations/experiments/`` (modules starting with ``_`` are helpers)."""
    return sorted(
        m.name for m in pkgutil.iter_modules(experiments_pkg.__path__) if not m.name.startswith("_")
    )


def load_runner(name: str) -> Any:
    """Return ``simulations.experiments.<name>.run``; unknown names list the valid ones."""
    names = runner_names()
    if name not in names:
        raise ConfigError(f"experiment.runner: unknown {name!r}; valid names: {', '.join(names)}")
    return importlib.import_module(f"simulations.experiments.{name}").run


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Compose the config, run the runner; any error fails the run (``finished:failed``)."""
    try:
        cfg = config_from_run_config(context.run_config)
        runner = load_runner(cfg.experiment.runner)
        run_config = canonical_run_config(context.run_config)
        preflight.check_config(cfg)
        # the data lives where the ClientApps run: this host in a simulation only
        preflight.check_host(cfg, data=isinstance(grid, InMemoryGrid))
        done = preflight.finished_run(
            cfg, str(run_config.get("experiment", "main")), str(run_config.get("overrides", ""))
        )
    except (CheckpointError, ConfigError) as err:
        log(ERROR, "configuration error: %s", err)
        raise
    if done:
        log(INFO, "flwr-semcom: %s", done)
        return
    if run_config != context.run_config:  # shortcut keys folded into `overrides`
        context = Context(
            run_id=context.run_id,
            node_id=context.node_id,
            node_config=context.node_config,
            state=context.state,
            run_config=run_config,
        )
    log(INFO, "flwr-semcom: experiment=%s runner=%s", cfg.experiment.name, cfg.experiment.runner)
    with stub_folders_removed():
        runner(grid, cfg, context)
