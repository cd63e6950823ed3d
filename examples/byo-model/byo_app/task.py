"""The user's own parts: a small CNN encoder with a JSCC head, a decoder, CIFAR-10 data."""

from pathlib import Path

import torch
from torch import nn

import flwr_semcom
from flwr_semcom.data import load_cifar10, resolve_data_root, stratified_split

torch.set_num_threads(1)  # a small model: one thread per simulated device and for the server


class Encoder(nn.Module):
    """CNN + JSCC head: images ``[B, 3, 32, W]`` -> ``z`` ``[B, 2k]`` (k complex symbols)."""

    def __init__(self, num_symbols: int) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )  # fmt: skip
        self.jscc = nn.Linear(32 * 4 * 4, 2 * num_symbols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.jscc(self.cnn(x))


def decoder(num_symbols: int) -> nn.Module:
    """Receiver: the received symbols ``[B, 2k]`` -> 10 class logits."""
    return nn.Sequential(nn.Linear(2 * num_symbols, 64), nn.ReLU(), nn.Linear(64, 10))


def load_data(run_config: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR-10 images (normalised), labels, seeded train/test split; ``data-root`` names the
    folder holding ``cifar10-test/`` (empty: ``../shared/data`` beside the flwr-semcom checkout)."""
    checkout = Path(flwr_semcom.__file__).resolve().parents[1]
    root = resolve_data_root(str(run_config["data-root"]), checkout)
    data = load_cifar10(root, limit_per_class=int(run_config["images-per-class"]))
    x = data.images.float() / 255.0
    x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)
    train_ids, test_ids = stratified_split(data.labels, 0.2, seed=int(run_config["seed"]))
    return x, data.labels, train_ids, test_ids
