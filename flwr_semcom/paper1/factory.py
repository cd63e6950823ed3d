"""Paper 1's split tasks for the bundled ClientApp: the composed config → typed task objects.

The one place where paper 1's split tasks meet the config (docs/paper1.md). Each factory
(:data:`~flwr_semcom.split.TaskFactory`) composes the config of the node's run from
``context.run_config`` (:func:`flwr_semcom.config.config_from_run_config`, cached per run
config), applies the message's task parameters as typed values and builds the task of the
node's ``partition-id``:

- ``rgbd_supervised``: :func:`~flwr_semcom.paper1.stage2.supervised_device` (no parameters);
- ``p1_finetune``: :func:`~flwr_semcom.paper1.stage2.finetune_device` (no parameters);
- ``p1_ssl``: :func:`~flwr_semcom.paper1.stage1.ssl_device`; parameters ``method`` and
  ``placement`` (str: ``pretrain.method`` / ``pretrain.placement``).

The split runtime builds each task once per run, node and parameters (its cache).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import Context
from omegaconf import DictConfig, OmegaConf

from flwr_semcom.config import ConfigError, config_from_run_config
from flwr_semcom.paper1.settings import check_pretrain_config
from flwr_semcom.paper1.stage1 import PRETRAIN_CLIENT_TASK, ssl_device
from flwr_semcom.paper1.stage2 import (
    FINETUNE_CLIENT_TASK,
    SUPERVISED_CLIENT_TASK,
    finetune_device,
    supervised_device,
)
from flwr_semcom.split import ClientTask, TaskFactory

__all__ = ["PARAMS", "client_task_factories", "node_config_of"]

#: Task parameters each client task accepts → the config key they set.
PARAMS: dict[str, dict[str, str]] = {
    SUPERVISED_CLIENT_TASK: {},
    FINETUNE_CLIENT_TASK: {},
    PRETRAIN_CLIENT_TASK: {"method": "pretrain.method", "placement": "pretrain.placement"},
}


def node_config_of(
    context: Context, task: str, params: Mapping[str, Any]
) -> tuple[DictConfig, int]:
    """The run's config with ``params`` applied, and the node's partition ID.

    Raises ``ConfigError`` for a parameter the task does not take or a node without a
    ``partition-id``.
    """
    allowed = PARAMS[task]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(f"task {task!r}: unknown task parameter(s) {unknown}; valid: {valid}")
    cfg = config_from_run_config(dict(context.run_config))
    if params:
        cfg = cfg.copy()
        for name, value in params.items():
            OmegaConf.update(cfg, allowed[name], value, merge=False)
        check_pretrain_config(cfg)
    torch.set_num_threads(int(cfg.num_threads))
    if "partition-id" not in context.node_config:
        raise ConfigError("node_config: missing 'partition-id' (an integer >= 0)")
    return cfg, int(context.node_config["partition-id"])  # type: ignore[arg-type]


def _factory(task: str, build: Callable[[DictConfig, int], ClientTask]) -> TaskFactory:
    def make(context: Context, params: Mapping[str, Any]) -> ClientTask:
        cfg, partition = node_config_of(context, task, params)
        return build(cfg, partition)

    make.__name__ = f"{task}_factory"
    return make


_FACTORIES: dict[str, TaskFactory] = {
    SUPERVISED_CLIENT_TASK: _factory(SUPERVISED_CLIENT_TASK, supervised_device),
    FINETUNE_CLIENT_TASK: _factory(FINETUNE_CLIENT_TASK, finetune_device),
    PRETRAIN_CLIENT_TASK: _factory(PRETRAIN_CLIENT_TASK, ssl_device),
}


def client_task_factories() -> dict[str, TaskFactory]:
    """Paper 1's client tasks by name (for :func:`flwr_semcom.split.add_split_client`)."""
    return dict(_FACTORIES)
