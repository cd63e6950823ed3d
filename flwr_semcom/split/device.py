"""The device side of split learning for any encoder, JSCC head and channel.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. II eq. 1-2 and Sec. III-B: device m encodes its
view x^m into the channel input z^m (encoder → JSCC head), the channel delivers ẑ^m (simulated
on the device, which sends the *received* features), and the device learns from the gradient
∂L/∂ẑ^m the server returns. :class:`DeviceTask` wraps a user's own modules for that role::

    task = DeviceTask(
        nn.Sequential(MyEncoder(), MyJSCCHead()),   # x -> z [B, 2k] (or {"z": ...})
        images,                                     # [N, ...] tensor, row = sample ID
        channel=AWGNChannel(snr_db=10.0),           # any nn.Module forward(z, generator=None)
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
    )

and a :data:`~flwr_semcom.split.tasks.TaskFactory` returns it on the node (see
:func:`~flwr_semcom.split.client.add_split_client`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from flwr_semcom.split.schedule import BatchPlan
from flwr_semcom.split.tasks import ClientTask

__all__ = ["DeviceTask", "OptimizerFactory", "SplitPipeline", "check_ids"]

#: Builds a fresh optimizer over the given parameters.
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def check_ids(ids: torch.Tensor, n: int, role: str) -> None:
    """``ValueError`` if a planned sample ID is outside ``[0, n)``."""
    if ids.numel() and (int(ids.max()) >= n or int(ids.min()) < 0):
        raise ValueError(f"plan: sample IDs out of range [0, {n}) for {role}")


class SplitPipeline(nn.Module):
    """Transmitter then channel: ``x -> {"z_hat": channel(transmitter(x))}``.

    ``transmitter(x)`` may return the channel input ``z`` or a dict holding it under ``"z"``;
    without a channel ``z_hat = z`` (an ideal link).
    """

    def __init__(self, transmitter: nn.Module, channel: nn.Module | None = None) -> None:
        super().__init__()
        self.transmitter = transmitter
        self.channel = channel

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        out = self.transmitter(x)
        z: torch.Tensor = out["z"] if isinstance(out, dict) else out
        if self.channel is None:
            return {"z_hat": z}
        return {"z_hat": self.channel(z, generator=generator)}


class DeviceTask(ClientTask):
    """One device of split learning: transmitter (+ channel) over a tensor of samples.

    Parameters
    ----------
    transmitter
        The device's trainable modules, ``x -> z`` (``[B, 2k]``: real parts then imaginary
        parts for an analog channel) or ``x -> {"z": z, ...}``: an encoder, or encoder + JSCC
        head.
    data
        The device's samples ``[N, ...]``; sample ID ``i`` is ``data[i]``.
    optimizer
        ``optimizer(params)`` builds a fresh optimizer (its state is restored by the runtime).
    channel
        Any module with ``forward(z, generator=None)`` (``flwr_semcom.channels`` or your
        own); ``None``: ideal link. Its noise must come from ``generator``.
    augment
        ``augment(x, seed)`` for training batches (the batch's ``aug_seed``: the same for every
        device of a batch, so paired views stay paired); ``None``: no augmentation.
    lr_schedule
        ``lr_schedule(round)`` → learning rate of that round (set by the runtime before the
        gradients of a batch of that round are applied); ``None``: the optimizer's.
    role
        A short name for logs and the ledger (e.g. the modality).
    report_ids
        Report ``0..N-1`` to the server's alignment check (every device must hold the same
        sample IDs).
    """

    def __init__(
        self,
        transmitter: nn.Module,
        data: torch.Tensor,
        *,
        optimizer: OptimizerFactory,
        channel: nn.Module | None = None,
        augment: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
        lr_schedule: Callable[[int], float] | None = None,
        role: str = "device",
        report_ids: bool = True,
    ) -> None:
        if not isinstance(data, torch.Tensor) or data.dim() < 1:
            raise TypeError(f"data must be a tensor [N, ...], got {type(data).__name__}")
        if not callable(optimizer):
            raise TypeError("optimizer must be a callable params -> torch.optim.Optimizer")
        self.model = SplitPipeline(transmitter, channel)
        self.data = data
        self.role = role
        self._optimizer = optimizer
        self._augment = augment
        self._lr_schedule = lr_schedule
        self._report_ids = report_ids

    def inputs(self, batch: BatchPlan, train: bool) -> tuple[torch.Tensor, ...]:
        """The batch's samples, augmented with the batch's seed in training."""
        check_ids(batch.ids, self.data.shape[0], self.role)
        x = self.data[batch.ids]
        if train and self._augment is not None:
            x = self._augment(x, batch.aug_seed)
        return (x,)

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return self._optimizer(params)

    def round_lr(self, round_: int) -> float | None:
        return None if self._lr_schedule is None else float(self._lr_schedule(round_))

    def sample_ids(self) -> torch.Tensor | None:
        """``0..N-1`` (with ``report_ids``): every device must hold the same sample IDs."""
        return torch.arange(self.data.shape[0]) if self._report_ids else None
