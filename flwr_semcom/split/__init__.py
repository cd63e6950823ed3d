"""Split learning on Flower: protocol, client handlers, tasks, schedule and reference.

See docs/split.md. Importing this package registers the built-in tasks (paper 1 Stage II on
RGB-D: client ``rgbd_supervised``, server ``rgbd_decoder``) and the config rules of the
``strategy`` keys of split learning.
"""

from flwr_semcom.config import add_rules
from flwr_semcom.split import rgbd as _rgbd  # noqa: F401  (registers the built-in tasks)
from flwr_semcom.split.rules import SPLIT_RULES, check_split_config
from flwr_semcom.split.schedule import BatchPlan, derive_seed
from flwr_semcom.split.tasks import (
    CLIENT_TASKS,
    SERVER_TASKS,
    ClientTask,
    ServerStep,
    ServerTask,
    build_client_task,
    build_server_task,
)

add_rules(SPLIT_RULES)

__all__ = [
    "CLIENT_TASKS",
    "SERVER_TASKS",
    "BatchPlan",
    "ClientTask",
    "ServerStep",
    "ServerTask",
    "build_client_task",
    "build_server_task",
    "check_split_config",
    "derive_seed",
]
