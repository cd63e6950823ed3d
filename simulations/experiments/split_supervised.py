"""Experiment ``split_supervised``: paper 1 Stage II from scratch (supervised split learning).

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. III-B, eq. 16-17, without Stage I: every
modality device trains its encoder + JSCC head from random weights through the gradients the
server returns; the server trains the decoder g (the "Supervised" baseline of Fig. 4-5).
With the default config (``experiment=main``) this is the README's main job: synthetic RGB-D,
two devices (RGB, depth), small CNN encoders, AWGN at ``channel.snr_db``.

Writes a results folder (flwr_semcom/results.py) under ``paths.output_dir``: ``config.yaml``,
``metrics.csv/json`` (one row per round; ``val_loss`` / ``val_accuracy`` with
``data.val_fraction`` > 0, off by default), ``summary.json`` (with validation: the selected
round ``val_selected_round`` and ``test_accuracy_at_val_selected``), ``ledger.csv/json`` and
the plots ``accuracy_vs_round.png`` and ``accuracy_vs_bits.png``, all refreshed after every
round, and ``checkpoint.pt`` + ``run.json`` every ``reliability.checkpoint_every`` rounds
(flwr_semcom/checkpoint.py). With ``reliability.resume=<results folder>`` (what
``semcom-run --resume`` sets) it restores server, clients, ledger, rows and RNG from that
folder's checkpoint and continues there; the metrics then equal an uninterrupted run's.
"""

from __future__ import annotations

import time
from logging import INFO
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid
from omegaconf import DictConfig

from flwr_semcom.accounting import CommLedger
from flwr_semcom.checkpoint import (
    RUN_FILE,
    Checkpoint,
    Checkpointer,
    get_rng_state,
    set_rng_state,
)
from flwr_semcom.config import ConfigError
from flwr_semcom.paper1.stage2 import (
    SUPERVISED_CLIENT_TASK,
    supervised_device,
    supervised_server,
)
from flwr_semcom.results import Results, new_run_dir, plot_lines
from flwr_semcom.split import split_kwargs
from flwr_semcom.split.reference import ReferenceResult, run_reference
from simulations.common import output_root
from simulations.experiments._paper1_summary import select_round
from strategies.split_training import SplitTraining

METHOD = "supervised"


def _plots(results: Results, rows: list[dict[str, Any]], label: str) -> None:
    rounds = [r["round"] for r in rows]
    bits = [8 * (r["cum_up_bytes"] + r["cum_down_bytes"]) for r in rows]
    test = [r["test_accuracy"] for r in rows]
    train = [r["train_accuracy"] for r in rows]
    plot_lines(
        results.dir / "accuracy_vs_round.png",
        {f"{label} test": (rounds, test), f"{label} train": (rounds, train)},
        xlabel="round (pass over the training set)",
        ylabel="accuracy",
        title="Split learning, Stage II from scratch",
    )
    plot_lines(
        results.dir / "accuracy_vs_bits.png",
        {f"{label} test": (bits, test)},
        xlabel="cumulative bits (uplink + downlink)",
        ylabel="test accuracy",
        title="Accuracy vs communication",
    )


def build_strategy(cfg: DictConfig, ledger: CommLedger) -> SplitTraining:
    """The experiment's strategy: paper 1 Stage II from scratch (server task ``rgbd_decoder``:
    :func:`~flwr_semcom.paper1.stage2.supervised_server`, client task ``rgbd_supervised``)."""
    kwargs = split_kwargs(cfg)  # checks the strategy keys first
    if str(cfg.strategy.server_task) != "rgbd_decoder":
        raise ConfigError(
            f"strategy.server_task: {cfg.strategy.server_task!r} is not run by split_supervised; "
            "valid: rgbd_decoder"
        )
    torch.set_num_threads(int(cfg.num_threads))
    return SplitTraining(
        supervised_server(cfg), client_task=SUPERVISED_CLIENT_TASK, ledger=ledger, **kwargs
    )


def reference(cfg: DictConfig, **kwargs: Any) -> ReferenceResult:
    """The in-process reference of this experiment's run (docs/split.md); ``kwargs`` override
    :func:`~flwr_semcom.split.reference.run_reference`'s arguments (``rounds``,
    ``recompute``, ``evaluate``, …)."""
    k = split_kwargs(cfg)
    torch.set_num_threads(int(cfg.num_threads))
    server = supervised_server(cfg)
    clients = [supervised_device(cfg, p) for p in range(server.num_clients)]
    keys = ("rounds", "batch_size", "steps_per_message", "eval_batch_size", "seed", "drop_last",
            "schedule", "compensation", "server_gradients")  # fmt: skip
    args: dict[str, Any] = {key: k[key] for key in keys}
    args["device"] = k["device"]
    args.update(kwargs)
    return run_reference(server, clients, **args)


def run(grid: Grid, cfg: DictConfig, context: Context) -> dict[str, Any]:
    """Train, evaluate every round, write the results folder; return the summary."""
    t0 = time.perf_counter()
    experiment = str(context.run_config.get("experiment", cfg.experiment.name))
    overrides = str(context.run_config.get("overrides", ""))
    ledger = CommLedger()
    strategy = build_strategy(cfg, ledger)
    policy = strategy.policy
    resume = cfg.get("reliability", {}).get("resume")
    ckpt: Checkpoint | None = None
    if resume:
        run_dir = Path(str(resume)).resolve()
        ckpt = Checkpointer(run_dir, cfg, experiment=experiment, overrides=overrides).load()
        experiment, overrides = ckpt.experiment, ckpt.overrides
    else:
        run_dir = new_run_dir(output_root(cfg), str(cfg.experiment.name))
    checkpointer = Checkpointer(run_dir, cfg, experiment=experiment, overrides=overrides)
    log(INFO, "results folder: %s", run_dir)
    results = Results(run_dir)
    first_round, elapsed = 1, 0.0
    clients_state: dict[int, Any] | None = None
    if ckpt is None:
        results.save_config(cfg)
    else:
        state = ckpt.state
        strategy.ledger = CommLedger()  # discovery is not counted twice
        strategy.discover(grid)
        strategy.ledger = ledger
        ledger.extend(CommLedger.from_records(state["ledger"]).rows)
        strategy.load_state_dict(state["server"])
        clients_state = state["clients"]
        strategy.restore_clients(grid, clients_state)
        results.rows = [dict(r) for r in state["rows"]]
        results.write_metrics()
        set_rng_state(state["rng"])
        first_round, elapsed = ckpt.round + 1, float(state["elapsed_s"])
        log(
            INFO,
            "split_supervised: resumed %s after round %d of %d",
            run_dir,
            ckpt.round,
            strategy.rounds,
        )
    t0 -= elapsed
    snr = cfg.channel.get("snr_db")
    label = f"S={strategy.steps_per_message}" + ("" if snr is None else f", {snr} dB")

    def on_round(row: dict[str, Any]) -> None:
        r = int(row["round"])
        out = {
            "round": r,
            "stage": strategy.stage,
            "method": METHOD,
            "snr_db": snr,
            "label_fraction": float(cfg.data.label_fraction),
            "steps_per_message": strategy.steps_per_message,
            "loss": row["loss"],
            "train_accuracy": row["train_accuracy"],
            "test_loss": row.get("test_loss"),
            "test_accuracy": row.get("test_accuracy"),
            "cum_up_bytes": ledger.total("bytes", direction="up", max_round=r),
            "cum_down_bytes": ledger.total("bytes", direction="down", max_round=r),
            "cum_channel_uses": ledger.total("channel_uses", max_round=r),
            "train_time_s": row["train_time_s"],
            "eval_time_s": row.get("eval_time_s"),
            "round_time_s": row["round_time_s"],
            "wall_time_s": time.perf_counter() - t0,
        }
        if "val_accuracy" in row:  # data.val_fraction > 0: selection metrics (off by default)
            out["val_loss"], out["val_accuracy"] = row["val_loss"], row["val_accuracy"]
        if row.get("skipped"):
            out["skipped"] = row["skipped"]
        results.add(out)
        results.write_ledger(ledger)
        _plots(results, results.rows, label)
        every = policy.checkpoint_every
        if every and (r % every == 0 or r == strategy.rounds):
            nonlocal clients_state
            clients_state = strategy.fetch_client_checkpoint(grid, clients_state, r)
            state = {
                "server": strategy.state_dict(),
                "clients": clients_state,
                "ledger": ledger.to_records(),
                "rows": results.rows,
                "rng": get_rng_state(),
                "elapsed_s": time.perf_counter() - t0,
            }
            if not (run_dir / RUN_FILE).exists():
                # run.json claims "resumable": written with the first checkpoint, never before
                checkpointer.write_run_file()
            checkpointer.save(r, state)

    strategy.start(grid, on_round=on_round, first_round=first_round)
    last = results.rows[-1]
    summary = {
        "experiment": str(cfg.experiment.name),
        "method": METHOD,
        "rounds": len(results.rows),
        "steps_per_message": strategy.steps_per_message,
        "snr_db": snr,
        "clients": [c.label for c in strategy.clients],  # partition:role (node IDs are random)
        "final_test_accuracy": last["test_accuracy"],
        "best_test_accuracy": max(r["test_accuracy"] for r in results.rows),
        "final_train_accuracy": last["train_accuracy"],
        "final_loss": last["loss"],
        "total_up_bytes": ledger.total("bytes", direction="up"),
        "total_down_bytes": ledger.total("bytes", direction="down"),
        "total_channel_uses": ledger.total("channel_uses"),
        "ledger": ledger.summary(),
        "wall_time_s": time.perf_counter() - t0,
    }
    chosen = select_round(results.rows)
    if chosen is not None:  # selection on the validation split, never on test accuracy
        summary["val_selected_round"] = chosen[0]
        summary["test_accuracy_at_val_selected"] = next(
            r["test_accuracy"] for r in results.rows if r["round"] == chosen[0]
        )
    results.write_summary(summary)
    results.write_ledger(ledger)
    log(
        INFO,
        "split_supervised: test accuracy %.4f after %d rounds; results in %s",
        last["test_accuracy"],
        len(results.rows),
        results.dir.resolve(),
    )
    return summary
