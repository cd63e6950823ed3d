"""ClientApp: each device runs split fine-tuning (its half of every image) and FedAvg."""

from collections.abc import Mapping

import torch
from flwr.app import Context
from flwr.clientapp import ClientApp
from torch.utils.data import TensorDataset

from byo_app.task import Encoder, decoder, load_data
from flwr_semcom.channels import RayleighChannel
from flwr_semcom.fedavg import EndToEnd, add_fedavg_client
from flwr_semcom.split import DeviceTask, add_split_client


def split_device(context: Context, params: Mapping[str, object]) -> DeviceTask:
    """Split learning: device p sees the left (p=0) or right (p=1) half of every image."""
    cfg, p = context.run_config, int(context.node_config["partition-id"])
    x, _, _, _ = load_data(cfg)
    torch.manual_seed(int(cfg["seed"]) + p)
    return DeviceTask(
        Encoder(int(cfg["num-symbols"]) // 2),  # half the symbols per half image
        x[..., 16 * p : 16 * (p + 1)],
        channel=RayleighChannel(float(cfg["snr-db"])),
        optimizer=lambda ps: torch.optim.SGD(ps, lr=float(cfg["lr"]), momentum=0.9),
        role=f"half{p}",
    )


def fedavg_model(context: Context) -> EndToEnd:
    """FedAvg: the device trains the whole link, encoder -> channel -> decoder."""
    k, snr = int(context.run_config["num-symbols"]), float(context.run_config["snr-db"])
    return EndToEnd(Encoder(k), RayleighChannel(snr), decoder(k))


def fedavg_data(context: Context) -> tuple[TensorDataset, TensorDataset]:
    """FedAvg: device p holds every n-th training and test image (whole images)."""
    x, y, train_ids, test_ids = load_data(context.run_config)
    p, n = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    mine_train, mine_test = train_ids[p::n], test_ids[p::n]
    return TensorDataset(x[mine_train], y[mine_train]), TensorDataset(x[mine_test], y[mine_test])


app = add_split_client(ClientApp(), {"byo-device": split_device})
app = add_fedavg_client(  # FedAvg's lr is set by the server's train config every round
    app, fedavg_model, fedavg_data, optimizer_fn=lambda p: torch.optim.SGD(p, lr=0.0, momentum=0.9)
)
