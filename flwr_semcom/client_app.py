"""The Flower ClientApp: a thin dispatch of message types to the library's handlers.

What an edge box installs and runs. Each algorithm keeps its client-side handlers in its
own module, which exposes ``ACTIONS: dict[str, handler]`` mapping a Flower message type
(``"train.<name>"``, ``"evaluate.<name>"`` or ``"query.<name>"``) to
``handler(msg: Message, context: Context) -> Message``. All client state lives in
``context.state`` (see ../shared/FLOWER_NOTES.md §3): nothing survives in globals.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

Handler = Callable[[Message, Context], Message]

#: Modules that contribute client actions (each has an ``ACTIONS`` dict).
ACTION_MODULES: tuple[str, ...] = (
    "flwr_semcom.node_info",
    "flwr_semcom.split.client",
    "flwr_semcom.paper1.client",
    "flwr_semcom.slf.client",
    "flwr_semcom.multitask.client",
)

app = ClientApp()


def collect_actions() -> dict[str, Handler]:
    """All registered actions; a duplicate message type is an error."""
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


register_actions(app, collect_actions())
