"""FedAvg for a user's own model: the client handlers and a ledger-counting server strategy.

Federated averaging (McMahan et al., AISTATS 2017, Algorithm 1): every round each device
starts from the global weights, trains ``E`` local epochs of minibatch SGD on its own data,
and returns its weights; the server averages them, weighted by the number of local samples.
In a semantic-communication system the device trains its *whole* pipeline end to end
(encoder → JSCC head → simulated channel → receiver), so FedAvg is the usual baseline of
split learning: parameters cross the link once per round instead of features and gradients
once per batch.

- :func:`add_fedavg_client` registers Flower's standard ``train`` and ``evaluate`` handlers on
  a ``ClientApp`` (the message contract of ``flwr.serverapp.strategy.FedAvg``: ``"arrays"``
  + ``"config"`` in, ``"arrays"`` + ``"metrics"`` with ``num-examples`` out).
- :class:`EndToEnd` joins a transmitter, a channel and a receiver into one trainable module.
- :class:`LedgerFedAvg` is Flower's ``FedAvg`` that also records every parameter transfer in a
  :class:`~flwr_semcom.accounting.CommLedger`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn
from torch.utils.data import DataLoader, Dataset

from flwr_semcom.accounting import CommLedger, record_nbytes
from flwr_semcom.split.device import SplitPipeline
from flwr_semcom.split.schedule import derive_seed

__all__ = ["EndToEnd", "LedgerFedAvg", "add_fedavg_client"]

ModelFn = Callable[[Context], nn.Module]
LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
OptimizerFn = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


DataFn = Callable[[Context], tuple[Dataset[Any], Dataset[Any]]]


class EndToEnd(SplitPipeline):
    """``receiver(channel(transmitter(x)))``: a whole link as one trainable module.

    Parameters
    ----------
    transmitter
        The device's encoder (+ JSCC head), ``x -> z`` (``[B, 2k]`` reals for analog
        channels) or ``x -> {"z": z, ...}``.
    channel
        Any module with ``forward(z, generator=None)`` (e.g.
        :class:`~flwr_semcom.channels.RayleighChannel`), or ``None`` for a noiseless link.
    receiver
        The decoder, ``z_hat -> output`` (e.g. class logits or ``{"logits": ...}``).

    Notes
    -----
    The transmitter side is split learning's device model
    (:class:`~flwr_semcom.split.SplitPipeline`), so ``state_dict`` keys are
    ``transmitter.*`` (the same as a :class:`~flwr_semcom.split.DeviceTask`'s model) and
    ``receiver.*``, plus the channel's buffers if it has any. ``forward(x, generator=None)``
    draws the channel noise from ``generator``.
    """

    def __init__(
        self, transmitter: nn.Module, channel: nn.Module | None, receiver: nn.Module
    ) -> None:
        super().__init__(transmitter, channel)
        self.receiver = receiver

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Any:  # type: ignore[override]
        return self.receiver(super().forward(x, generator=generator)["z_hat"])


def _takes_generator(model: nn.Module) -> bool:
    return "generator" in inspect.signature(model.forward).parameters


def _run_model(model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> Any:
    """The model's output; a dict output with ``"logits"`` gives its logits."""
    out = model(x, generator=gen) if _takes_generator(model) else model(x)
    return out["logits"] if isinstance(out, dict) and "logits" in out else out


def _partition(context: Context) -> int:
    pid = context.node_config.get("partition-id", 0)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < 0:
        raise ValueError(f"node_config['partition-id'] must be an int >= 0, got {pid!r}")
    return pid


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def add_fedavg_client(
    app: ClientApp,
    model_fn: ModelFn,
    data_fn: DataFn,
    *,
    loss_fn: LossFn | None = None,
    optimizer_fn: OptimizerFn | None = None,
    local_epochs: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
) -> ClientApp:
    """Register FedAvg's ``train`` and ``evaluate`` handlers for the user's model on ``app``.

    Parameters
    ----------
    app
        The ClientApp to extend (its other handlers stay as they are).
    model_fn
        ``model_fn(context) -> nn.Module``; the module's whole ``state_dict`` is what FedAvg
        averages. If its ``forward`` takes a ``generator`` keyword (as :class:`EndToEnd`
        does), it gets a seeded ``torch.Generator`` for the channel noise.
    data_fn
        ``data_fn(context) -> (train, test)``: this device's training and test datasets of
        ``(x, y)`` pairs (e.g. ``TensorDataset``). Called once per (run, node).
    loss_fn
        ``loss_fn(output, y) -> scalar``; default cross-entropy on class logits. A model that
        returns a dict with ``"logits"`` (CompressAI style) is read at that key.
    optimizer_fn
        ``optimizer_fn(params) -> Optimizer``, a fresh optimizer every round; default SGD with
        lr 0.01.
    local_epochs
        Local epochs per round.
    batch_size
        Minibatch size of training and evaluation.
    seed
        Base seed: the shuffling, the channel noise and torch's RNG (dropout) of round ``t``
        on partition ``p`` are seeded with ``derive_seed(seed, t, p)``.
    device
        Torch device the model trains on.

    Returns
    -------
    ClientApp
        ``app``, for chaining.

    Notes
    -----
    Per-round values travel in the message's ``"config"`` record (as in Flower's FedProx) and
    override the keyword defaults: ``lr`` (set on every parameter group), ``local-epochs``,
    ``batch-size``, ``seed``; ``server-round`` is set by ``FedAvg``.
    Reply of ``train``: ``"arrays"`` (the trained weights) and ``"metrics"``
    (``train_loss``, ``num-examples``). Reply of ``evaluate``: ``"metrics"`` (``eval_loss``,
    ``eval_acc`` for class-label targets, ``num-examples``). Model and data are built once per
    (run, node) in this process and cached; every message reloads the weights it carries.
    """
    defaults = {
        "local-epochs": _positive_int("local_epochs", local_epochs),
        "batch-size": _positive_int("batch_size", batch_size),
        "seed": seed,
    }
    criterion: LossFn = loss_fn if loss_fn is not None else nn.functional.cross_entropy
    make_opt: OptimizerFn = (
        optimizer_fn if optimizer_fn is not None else (lambda p: torch.optim.SGD(p, lr=0.01))
    )
    cache: dict[tuple[int, int], tuple[nn.Module, Dataset[Any], Dataset[Any]]] = {}

    def setup(msg: Message, context: Context) -> tuple[nn.Module, Any, dict[str, Any]]:
        key = (context.run_id, context.node_id)
        if key not in cache:
            train_set, test_set = data_fn(context)
            cache[key] = (model_fn(context).to(device), train_set, test_set)
        model, train_set, test_set = cache[key]
        if "arrays" not in msg.content.array_records:
            raise ValueError("a FedAvg message must carry the global weights as 'arrays'")
        model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
        config = msg.content.config_records.get("config", ConfigRecord())
        opts: dict[str, Any] = {k: config.get(k, v) for k, v in defaults.items()}
        for name in ("local-epochs", "batch-size"):
            _positive_int(name, opts[name])
        rnd = config.get("server-round", 0)
        opts["round-seed"] = derive_seed(int(opts["seed"]), int(rnd), _partition(context))  # type: ignore[arg-type]
        opts["lr"] = config.get("lr")
        return model, (train_set, test_set), opts

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        model, (train_set, _), opts = setup(msg, context)
        optimizer = make_opt(model.parameters())
        if opts["lr"] is not None:
            for group in optimizer.param_groups:
                group["lr"] = float(opts["lr"])
        gen = torch.Generator().manual_seed(opts["round-seed"])
        loader = DataLoader(train_set, batch_size=opts["batch-size"], shuffle=True, generator=gen)
        total, n = 0.0, 0
        model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(opts["round-seed"])
            for _ in range(opts["local-epochs"]):
                for x, y in loader:
                    x, y = x.to(device), y.to(device)
                    loss = criterion(_run_model(model, x, gen), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(y)
                    n += len(y)
        values = {"train_loss": total / max(n, 1), "num-examples": len(train_set)}
        metrics = MetricRecord(values)  # type: ignore[arg-type]
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
        return Message(content, reply_to=msg)

    @app.evaluate()
    @torch.no_grad()
    def evaluate(msg: Message, context: Context) -> Message:
        model, (_, test_set), opts = setup(msg, context)
        gen = torch.Generator().manual_seed(opts["round-seed"])
        loss_sum, correct, n = 0.0, 0, 0
        model.eval()
        for x, y in DataLoader(test_set, batch_size=opts["batch-size"]):
            x, y = x.to(device), y.to(device)
            out = _run_model(model, x, gen)
            loss_sum += float(criterion(out, y)) * len(y)
            if isinstance(out, torch.Tensor) and out.dim() == 2 and y.dim() == 1:
                correct += int((out.argmax(dim=1) == y).sum())
            n += len(y)
        values: dict[str, float | int] = {"eval_loss": loss_sum / max(n, 1), "num-examples": n}
        values["eval_acc"] = correct / max(n, 1)
        return Message(RecordDict({"metrics": MetricRecord(values)}), reply_to=msg)  # type: ignore[arg-type]

    return app


class LedgerFedAvg(FedAvg):
    """Flower's ``FedAvg`` that records every parameter transfer in a ledger.

    Parameters
    ----------
    ledger
        Where transfers are counted (a new :class:`~flwr_semcom.accounting.CommLedger` if
        ``None``).
    stage
        Ledger stage of the training transfers (``"finetune"`` by default; evaluation
        downloads are counted under ``"eval"``).
    **kwargs
        Passed to ``flwr.serverapp.strategy.FedAvg`` (``min_available_nodes``, ...).

    Notes
    -----
    Rows: ``down``/``parameters`` for every train and evaluate message, ``up``/``parameters``
    for every successful train reply; the client is the node id. Sizes are the arrays' bytes
    (:func:`~flwr_semcom.accounting.record_nbytes`), no channel uses (a data link).
    """

    def __init__(self, *, ledger: CommLedger | None = None, stage: str = "finetune", **kwargs: Any):
        super().__init__(**kwargs)
        self.ledger = CommLedger() if ledger is None else ledger
        self.stage = stage

    def _count_down(self, msgs: Iterable[Message], stage: str, rnd: int) -> list[Message]:
        out = list(msgs)
        for msg in out:
            self.ledger.record(
                direction="down",
                stage=stage,
                kind="parameters",
                nbytes=record_nbytes(msg.content.array_records[self.arrayrecord_key]),
                round=rnd,
                client=msg.metadata.dst_node_id,
            )
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages, each counted as a download."""
        msgs = super().configure_train(server_round, arrays, config, grid)
        return self._count_down(msgs, self.stage, server_round)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Count every successful reply's weights as an upload, then average (FedAvg)."""
        replies = list(replies)
        for rep in replies:
            if not rep.has_error() and self.arrayrecord_key in rep.content.array_records:
                self.ledger.record(
                    direction="up",
                    stage=self.stage,
                    kind="parameters",
                    nbytes=record_nbytes(rep.content.array_records[self.arrayrecord_key]),
                    round=server_round,
                    client=rep.metadata.src_node_id,
                )
        return super().aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's evaluate messages, each counted as a download of stage ``eval``."""
        msgs = super().configure_evaluate(server_round, arrays, config, grid)
        return self._count_down(msgs, "eval", server_round)
