"""Split learning on Flower: protocol, client handlers, tasks, schedule and reference.

Public API (docs/split.md, docs/api.md):

- device side: :class:`DeviceTask` (your encoder [+ JSCC head] + channel over your data),
  :class:`ClientTask` (the base to write your own), :data:`TaskFactory`, and
  :func:`add_split_client` (registers the split handlers on your ClientApp);
- server side: :class:`DecoderServer` (your classifier on the concatenated uplinks),
  :class:`ServerTask`, driven by ``strategies.split_training.SplitTraining``;
- node state helpers :func:`task_model`, :func:`set_task_model`, :func:`clear_tasks`;
- the schedule (:class:`BatchPlan`, :func:`derive_seed`) and the in-process reference
  (:func:`~flwr_semcom.split.reference.run_reference`).

Importing this package registers the config rules of the ``strategy`` keys of split learning
(:mod:`flwr_semcom.split.settings`).
"""

from flwr_semcom.rules import add_rules
from flwr_semcom.split.client import add_split_client, split_actions
from flwr_semcom.split.decoder import DecoderServer
from flwr_semcom.split.device import DeviceTask, SplitPipeline
from flwr_semcom.split.schedule import BatchPlan, derive_seed
from flwr_semcom.split.settings import SPLIT_RULES, check_split_config, split_kwargs
from flwr_semcom.split.state import clear_tasks, set_task_model, task_model
from flwr_semcom.split.tasks import ClientTask, ServerStep, ServerTask, TaskFactory

add_rules(SPLIT_RULES)

__all__ = [
    "BatchPlan",
    "ClientTask",
    "DecoderServer",
    "DeviceTask",
    "ServerStep",
    "ServerTask",
    "SplitPipeline",
    "TaskFactory",
    "add_split_client",
    "check_split_config",
    "clear_tasks",
    "derive_seed",
    "set_task_model",
    "split_actions",
    "split_kwargs",
    "task_model",
]
