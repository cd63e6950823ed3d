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

The app's mods: :func:`inject_faults`, the test-only fault injection of ``reliability.fault``
(docs/reliability.md: it fails a chosen ``train.split_step`` before the handler touches
``context.state``), then the relay to the node's worker (:func:`flwr_semcom.runtime.relay.
relay_mod`; run config ``warm-clients``, node config ``worker-socket``; docs/split.md "Warm
client state"), which hands the split messages (and any other while the worker holds state
that ``context.state`` lacks) to the node's long-lived worker process when one is configured,
and otherwise passes them on.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from flwr_semcom.alignment import add_slf_client
from flwr_semcom.config import config_from_run_config
from flwr_semcom.paper1.factory import client_task_factories
from flwr_semcom.reliability import maybe_inject
from flwr_semcom.runtime.relay import relay_mod
from flwr_semcom.slf.factory import device_from_context
from flwr_semcom.split import add_split_client
from flwr_semcom.split.protocol import MESSAGE_TYPES, TRAIN_STEP, MessageSpec

__all__ = [
    "ACTION_MODULES",
    "Handler",
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
    """A fresh bundled ClientApp; with ``run_config``, its handlers see that run config
    (``flwr.simulation.run_simulation`` passes an empty one, FLOWER_NOTES §2.7, and a
    ClientApp may not modify ``context.run_config``: a mod passes a copy of the context)."""
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


app = make_app()
