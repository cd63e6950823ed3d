"""The bundled Flower ClientApp: the three papers' handlers on one app.

What an edge box installs and runs (``[tool.flwr.app.components] clientapp``). SLF / FedAvg
alignment (paper 2) comes from :func:`flwr_semcom.alignment.add_slf_client` with
:func:`flwr_semcom.slf.factory.device_from_context`; split learning from
:func:`flwr_semcom.split.add_split_client` with paper 1's task factories
(:func:`flwr_semcom.paper1.factory.client_task_factories`: each composes the run's config from
``context.run_config`` once and builds the node's task once per run). The other algorithms
keep their handlers in their own modules, each exposing ``ACTIONS: dict[str, handler]``
(message type ``"train.<name>"``, ``"evaluate.<name>"`` or ``"query.<name>"`` →
``handler(msg: Message, context: Context) -> Message``). All client state lives in
``context.state`` (see ../shared/FLOWER_NOTES.md §3): nothing survives in globals.

``app`` is a :class:`RelayingClientApp`: importing this module imports flwr and the standard
library only (no torch). In deployment Flower starts a new ``flwr-clientapp`` process for every
message (FLOWER_NOTES §9); when the node config names a per-node worker (``worker-socket``,
started beside the SuperNode by ``deploy/supernode.sh --worker``), ``app`` relays the message
to it and never imports torch. Otherwise (simulation, tests, a deployment without a worker) it
builds the full app (:func:`make_app`) on first use and hands the message to it.

The full app's mods: :func:`inject_faults`, the test-only fault injection of
``reliability.fault`` (docs/reliability.md: it fails a chosen ``train.split_step`` before the
handler touches ``context.state``), then the relay to a spawned worker
(:func:`flwr_semcom.runtime.relay.relay_mod`; run config ``warm-clients``; docs/split.md "Warm
client state"), which hands the split messages (and any other while the worker holds state
that ``context.state`` lacks) to the node's long-lived worker process in simulation.

Importing this module in the simulation engine's process replaces Flower's 0.1 s message
feeder with an adaptive one (:func:`flwr_semcom.runtime.simfeed.install_fast_feeder`;
``SEMCOM_SIM_FEEDER=flower`` keeps Flower's); elsewhere that call does nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from flwr_semcom.runtime.relay import NODE_KEY, in_worker, relay_mod, relay_to_node_worker
from flwr_semcom.runtime.simfeed import install_fast_feeder

__all__ = [
    "ACTION_MODULES",
    "Handler",
    "RelayingClientApp",
    "app",
    "collect_actions",
    "inject_faults",
    "make_app",
    "register_actions",
]

Handler = Callable[[Message, Context], Message]

#: Modules that contribute client actions (each has an ``ACTIONS`` dict).
ACTION_MODULES: tuple[str, ...] = (
    "flwr_semcom.node_info",
    "flwr_semcom.paper1.client",
    "flwr_semcom.multitask.client",
)


def inject_faults(msg: Message, context: Context, call_next: Handler) -> Message:
    """Client mod: raise (or sleep, then raise) when ``reliability.fault`` of the run's config
    targets this ``train.split_step`` (partition, round, exchange, attempt); else pass on."""
    from flwr_semcom.config import config_from_run_config
    from flwr_semcom.reliability import maybe_inject
    from flwr_semcom.split.protocol import TRAIN_STEP, MessageSpec

    if msg.metadata.message_type == TRAIN_STEP and "config" in msg.content:
        cfg = config_from_run_config(dict(context.run_config))
        spec = MessageSpec.from_message(msg, TRAIN_STEP)
        partition = int(context.node_config.get("partition-id", -1))  # type: ignore[arg-type]
        maybe_inject(cfg, partition, spec.round, spec.exchange, spec.attempt)
    return call_next(msg, context)


def collect_actions() -> dict[str, Handler]:
    """All registered actions of :data:`ACTION_MODULES`; a duplicate message type is an error."""
    actions: dict[str, Handler] = {}
    for name in ACTION_MODULES:
        module = importlib.import_module(name)
        for message_type, handler in module.ACTIONS.items():
            if message_type in actions:
                raise ValueError(f"client action {message_type!r} registered twice ({name})")
            actions[message_type] = handler
    return actions


def register_actions(client_app: ClientApp, actions: Mapping[str, Handler]) -> ClientApp:
    """Register each ``"<kind>.<action>"`` handler of ``actions`` on ``client_app``; return it.

    ``kind`` must be ``train``, ``evaluate`` or ``query`` (else ``ValueError``).
    """
    for message_type, handler in actions.items():
        kind, _, action = message_type.partition(".")
        if kind not in ("train", "evaluate", "query"):
            raise ValueError(f"message type must start with train/evaluate/query: {message_type!r}")
        decorator = getattr(client_app, kind)(action or None)
        decorator(handler)
    return client_app


def make_app(run_config: Mapping[str, bool | float | int | str] | None = None) -> ClientApp:
    """A fresh full ClientApp (imports torch and every handler); with ``run_config``, its
    handlers see that run config (``flwr.simulation.run_simulation`` passes an empty one,
    FLOWER_NOTES §2.7, and a ClientApp may not modify ``context.run_config``: a mod passes a
    copy of the context)."""
    from flwr_semcom.alignment import add_slf_client
    from flwr_semcom.paper1.factory import client_task_factories
    from flwr_semcom.slf.factory import device_from_context
    from flwr_semcom.split import add_split_client
    from flwr_semcom.split.protocol import MESSAGE_TYPES

    mods: list[Callable[[Message, Context, Handler], Message]] = [
        inject_faults,
        relay_mod(f"{__name__}:app", MESSAGE_TYPES),  # split messages (a worker loads `app`)
    ]
    if run_config is not None:
        fixed = dict(run_config)

        def with_run_config(msg: Message, ctx: Context, call_next: Handler) -> Message:
            inner = Context(ctx.run_id, ctx.node_id, ctx.node_config, ctx.state, dict(fixed))
            return call_next(msg, inner)

        mods.insert(0, with_run_config)
    client_app = ClientApp(mods=mods)
    register_actions(client_app, collect_actions())
    add_slf_client(client_app, device_from_context)
    return add_split_client(client_app, client_task_factories())


class RelayingClientApp(ClientApp):
    """The bundled app as Flower loads it: relays every message to the node's worker when the
    node config names one (no torch in this process), else runs the full app, built on first
    use (:func:`make_app`). A worker that is gone leaves the message to the full app here, with
    one warning line (:func:`~flwr_semcom.runtime.relay.relay_to_node_worker`)."""

    def __init__(self) -> None:
        super().__init__()
        self._full: ClientApp | None = None

    def full(self) -> ClientApp:
        """The full app (built once per process)."""
        if self._full is None:
            self._full = make_app()
        return self._full

    def prepare(self) -> None:
        """Build the full app now (a worker calls this before it serves)."""
        self.full()

    def __call__(self, message: Message, context: Context) -> Message:
        if not in_worker():
            reply = relay_to_node_worker(message, context)
            if reply is not None:
                return reply
            if NODE_KEY in context.node_config:  # no worker: handle it here, cold
                config = {k: v for k, v in context.node_config.items() if k != NODE_KEY}
                context = Context(
                    context.run_id, context.node_id, config, context.state, context.run_config
                )
        return self.full()(message, context)

    def __getstate__(self) -> dict[str, Any]:  # Ray ships the app: rebuild the full one there
        return {**self.__dict__, "_full": None}


app = RelayingClientApp()

# In the simulation engine's process only: Flower's 0.1 s feeder → an adaptive one
# (flwr_semcom.runtime.simfeed; SEMCOM_SIM_FEEDER=flower keeps Flower's).
install_fast_feeder()
