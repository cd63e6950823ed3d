"""``query.node_info``: what a node runs on (versions, device, threads, its node config).

The first thing to check on a new edge box: the ServerApp's ``node_check`` experiment asks
every SuperNode for this record and fails loudly if one cannot answer.
"""

from __future__ import annotations

import os
import platform
import socket

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

from flwr_semcom.rules import resolve_device


def node_info(msg: Message, context: Context) -> Message:
    """Reply with versions, device selection and the node config of this SuperNode."""
    import flwr

    setting = (
        str(msg.content["config"].get("device", "auto")) if "config" in msg.content else "auto"
    )
    record = ConfigRecord(
        {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "flwr": flwr.__version__,
            "cuda_available": torch.cuda.is_available(),
            "cuda_devices": torch.cuda.device_count(),
            "device": resolve_device(setting),
            "num_threads": torch.get_num_threads(),
            "node_config": " ".join(f"{k}={v}" for k, v in sorted(context.node_config.items())),
        }
    )
    return Message(RecordDict({"info": record}), reply_to=msg)


ACTIONS = {"query.node_info": node_info}
