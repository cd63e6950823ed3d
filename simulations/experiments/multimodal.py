"""Experiment ``multimodal``: paper 1 end to end, Stage I then Stage II, for several methods.

Paper 1 (Zhao et al., arXiv 2503.13940), Algorithm 1 and Sec. IV (Fig. 4 full labels, Fig. 5
50 % labels). For every method of ``experiment.methods`` (DeCUR, SimCLR, Barlow Twins,
supervised) in one Flower run, with the client state reset between methods:

1. Stage I (label-free, every training scene) in the method's placement
   (:mod:`strategies.pretrain`; none for ``supervised``);
2. Stage II (labelled scenes) through the split runtime: devices send channel-corrupted
   features, the server decoder works on their concatenation and returns gradients;
   FedAvg per modality when ``data.devices_per_modality`` > 1; test accuracy after every
   round.

The results folder (``outputs/<experiment.name>/<timestamp>/``, schema in docs/paper1.md)
holds ``config.yaml``, ``metrics.csv``/``.json`` (one row per method, stage and round),
``summary.json``, ``ledger.csv``/``.json`` (every transfer, with its method) and the plots
``accuracy_vs_rounds.png`` / ``accuracy_vs_bits.png`` (one line per method). The run ends
with a table: method, best accuracy, Stage-II rounds and bits to the target accuracy
(default: the supervised baseline's final accuracy), Stage-I bits.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Sequence
from logging import ERROR, INFO
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from omegaconf import DictConfig

from flwr_semcom.accounting import CommLedger, atomic_write
from flwr_semcom.config import compose_config
from flwr_semcom.paper1 import client as p1_client
from flwr_semcom.paper1.data import StageIds, num_devices, stage_ids
from flwr_semcom.paper1.settings import (
    METHOD_LABELS,
    check_pretrain_config,
    method_key,
    resolve_placement,
)
from flwr_semcom.paper1.stability import NonFiniteError
from flwr_semcom.paper1.tasks import DecoderServer, DeCURServer
from flwr_semcom.results import Results, new_run_dir, plot_lines
from flwr_semcom.split.exchange import ClientInfo, exchange
from flwr_semcom.split.protocol import record_nbytes
from simulations.common import output_root
from strategies.pretrain import LocalPretrain, ServerPretrain, ShardedSplit, stage1_cfg
from strategies.split_training import SplitTraining

__all__ = ["num_nodes", "run", "stage_bits", "summarize"]

_METHOD_KEYS = ("pretrain.method", "pretrain.placement")


def num_nodes(cfg: DictConfig) -> int:
    """SuperNodes this experiment needs: one per device (modalities × devices per modality).

    ``semcom-run`` calls it before starting Flower, so it also checks the paper-1 settings
    (``ConfigError`` naming the key: the launcher exits 2 at once).
    """
    check_pretrain_config(cfg)
    for method in cfg.experiment.get("methods", []):
        resolve_placement(method_key(str(method)), str(cfg.pretrain.placement))
    return num_devices(cfg)


def method_overrides(overrides: str, method: str, placement: str) -> str:
    """``overrides`` with ``pretrain.method`` / ``pretrain.placement`` set for one method."""
    kept = [
        o for o in shlex.split(overrides) if o.split("=", 1)[0].lstrip("+~") not in _METHOD_KEYS
    ]
    kept += [f"pretrain.method={method}", f"pretrain.placement={placement}"]
    return " ".join(shlex.quote(o) for o in kept)


def stage_bits(ledger: CommLedger, stage: str, max_round: int | None = None) -> dict[str, int]:
    """Cumulative bytes (payload up/down, control) and channel uses of a stage."""
    where: dict[str, Any] = {"stage": stage}
    if max_round is not None:
        where["max_round"] = max_round
    up = ledger.total("bytes", direction="up", **where)
    down = ledger.total("bytes", direction="down", **where)
    control = ledger.total("bytes", kind="control", **where)
    up_ctrl = ledger.total("bytes", kind="control", direction="up", **where)
    return {
        "up_bytes": up - up_ctrl,
        "down_bytes": down - (control - up_ctrl),
        "control_bytes": control,
        "channel_uses": ledger.total("channel_uses", **where),
    }


class _Run:
    """State of one run of the experiment (server side)."""

    def __init__(self, grid: Grid, cfg: DictConfig, context: Context) -> None:
        self.grid = grid
        self.cfg = cfg
        self.experiment = str(context.run_config.get("experiment", "main"))
        self.overrides = str(context.run_config.get("overrides", ""))
        self.ids: StageIds = stage_ids(cfg)
        self.results = Results(new_run_dir(output_root(cfg), str(cfg.experiment.name)))
        self.results.save_config(cfg)
        self.ledgers: dict[str, CommLedger] = {}
        self.methods: dict[str, dict[str, Any]] = {}
        self.t_start = time.perf_counter()
        s = cfg.strategy
        self.poll_interval = float(s.poll_interval)
        self.timeout = float(s.timeout)
        self.precise_bn = int(cfg.get("finetune", {}).get("precise_bn_samples", 0))
        probe = SplitTraining(
            cfg,
            experiment=self.experiment,
            overrides=self.overrides,
            stage="finetune",
            server_task=DecoderServer(cfg, clients=num_devices(cfg)),
            ledger=CommLedger(),
        )
        self.clients: list[ClientInfo] = probe.discover(grid)
        dpm = int(cfg.data.devices_per_modality)
        self.dpm = dpm
        self.pretrain_examples = {
            c.partition_id: float(self.ids.shards[c.partition_id % dpm].shape[0])
            for c in self.clients
        }
        self.finetune_examples = {
            c.partition_id: float(max(1, self.ids.labelled_shards[c.partition_id % dpm].shape[0]))
            for c in self.clients
        }

    # ------------------------------------------------------------------ helpers
    def send(self, msgs: Sequence[Message], action: str) -> list[Message]:
        return exchange(
            self.grid,
            msgs,
            self.clients,
            action=action,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )

    def broadcast(
        self,
        action: str,
        config: dict[str, Any],
        ledger: CommLedger | None,
        stage: str,
        round_: int = 0,
    ) -> list[Message]:
        msgs = []
        for c in self.clients:
            rec = ConfigRecord(dict(config))
            if ledger is not None:
                ledger.record(
                    direction="down",
                    stage=stage,
                    kind="control",
                    nbytes=record_nbytes(rec),
                    round=round_,
                    client=f"{c.partition_id}:{c.role}",
                )
            msgs.append(Message(RecordDict({"config": rec}), c.node_id, action))
        return self.send(msgs, action)

    def row(
        self,
        label: str,
        stage: str,
        round_: int,
        rounds: int,
        metrics: dict[str, float],
        ledger: CommLedger,
        t_round: float,
    ) -> dict[str, Any]:
        bits = stage_bits(ledger, stage, round_)
        row: dict[str, Any] = {
            "method": label,
            "stage": stage,
            "round": round_,
            "snr_db": float(self.cfg.channel.get("snr_db", math.nan)),
            "label_fraction": float(self.cfg.data.label_fraction),
            "loss": metrics.get("loss", math.nan),
            "train_accuracy": metrics.get("train_accuracy", math.nan),
            "test_accuracy": metrics.get("test_accuracy", math.nan),
            **bits,
            "bits": 8 * (bits["up_bytes"] + bits["down_bytes"]),
            "grad_norm_mean": metrics.get("grad_norm_mean", math.nan),
            "grad_norm_max": metrics.get("grad_norm_max", math.nan),
            "uplink_grad_norm_max": metrics.get("uplink_grad_norm_max", math.nan),
            "round_time_s": time.perf_counter() - t_round,
            "wall_time_s": time.perf_counter() - self.t_start,
        }
        self.results.add(row)
        acc = row["test_accuracy"]
        norm = row["grad_norm_max"]
        if math.isnan(norm):  # Stage I split: the server has no weights, log ∂L/∂uplink
            norm = row["uplink_grad_norm_max"]
        log(
            INFO,
            "[%s] %s round %d/%d | loss %.4f%s | %s bits (+%s control) | grad norm max %.3g | "
            "%.1f s (total %.0f s)",
            label,
            stage,
            round_,
            rounds,
            row["loss"],
            "" if math.isnan(acc) else f" | test acc {acc:.4f}",
            f"{row['bits']:.4g}",
            f"{8 * bits['control_bytes']:.3g}",
            norm,
            row["round_time_s"],
            row["wall_time_s"],
        )
        return row

    # ------------------------------------------------------------------ one method
    def run_method(self, method: str) -> None:
        cfg = self.cfg
        label = METHOD_LABELS[method]
        placement = resolve_placement(method, str(cfg.pretrain.placement))
        ledger = self.ledgers.setdefault(label, CommLedger())
        info: dict[str, Any] = {"method": method, "placement": placement, "status": "ok"}
        self.methods[label] = info
        t0 = time.perf_counter()
        self.broadcast(p1_client.RESET, {}, None, "pretrain")
        m_over = method_overrides(self.overrides, method, placement)
        mcfg = compose_config(self.experiment, m_over)
        check_pretrain_config(mcfg)
        rounds1 = int(mcfg.pretrain.rounds) if method != "none" else 0
        info["pretrain_rounds"] = rounds1
        try:
            source = self.stage1(label, method, placement, mcfg, m_over, ledger, rounds1)
            info["stage1_time_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            if source is not None:
                self.broadcast(
                    p1_client.INIT_FINETUNE,
                    {"experiment": self.experiment, "overrides": self.overrides, "source": source},
                    ledger,
                    "finetune",
                )
            self.stage2(label, ledger)
            info["stage2_time_s"] = time.perf_counter() - t1
        except NonFiniteError as err:
            info["status"] = "diverged"
            info["error"] = str(err)
            log(ERROR, "[%s] %s", label, err)
        info["wall_time_s"] = time.perf_counter() - t0

    def stage1(
        self,
        label: str,
        method: str,
        placement: str,
        mcfg: DictConfig,
        m_over: str,
        ledger: CommLedger,
        rounds: int,
    ) -> str | None:
        """Run Stage I; return the ``source`` of the Stage II encoders (None: already sent)."""
        if method == "none" or rounds == 0:
            return "random"
        if placement == "local":
            local = LocalPretrain(
                mcfg,
                self.clients,
                experiment=self.experiment,
                overrides=m_over,
                ledger=ledger,
                poll_interval=self.poll_interval,
                timeout=self.timeout,
            )
            for r in range(1, rounds + 1):
                t = time.perf_counter()
                self.row(label, "pretrain", r, rounds, local.train_round(self.grid, r), ledger, t)
            local.finish(self.grid, rounds)
            return "local"
        if placement == "split":
            s1 = stage1_cfg(mcfg)
            m = len(mcfg.data.modalities)
            tasks = [
                DeCURServer(s1, train_ids=self.ids.shards[k], clients=m) for k in range(self.dpm)
            ]
            runner = ShardedSplit(
                s1,
                self.clients,
                tasks,
                experiment=self.experiment,
                overrides=m_over,
                stage="pretrain",
                ledger=ledger,
                num_examples=self.pretrain_examples,
            )
            for r in range(1, rounds + 1):
                t = time.perf_counter()
                self.row(label, "pretrain", r, rounds, runner.train_round(self.grid, r), ledger, t)
            return "split"
        server = ServerPretrain(mcfg, self.ids.train)
        for r in range(1, rounds + 1):
            t = time.perf_counter()
            self.row(label, "pretrain", r, rounds, server.train_round(r), ledger, t)
        server.download(
            self.grid,
            self.clients,
            experiment=self.experiment,
            overrides=self.overrides,
            ledger=ledger,
            server_round=rounds,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
        )
        return None

    def stage2(self, label: str, ledger: CommLedger) -> None:
        cfg = self.cfg
        m = len(cfg.data.modalities)
        first = DecoderServer(cfg, method=label, train_ids=self.ids.labelled_shards[0], clients=m)
        tasks = [first] + [
            DecoderServer(
                cfg,
                method=label,
                train_ids=self.ids.labelled_shards[k],
                decoder=first.model,  # type: ignore[arg-type]
                optimizer=first.optimizer,
                clients=m,
            )
            for k in range(1, self.dpm)
        ]
        runner = ShardedSplit(
            cfg,
            self.clients,
            tasks,
            experiment=self.experiment,
            overrides=self.overrides,
            stage="finetune",
            ledger=ledger,
            num_examples=self.finetune_examples,
        )
        rounds = int(cfg.strategy.rounds)
        for r in range(1, rounds + 1):
            t = time.perf_counter()
            metrics = runner.train_round(self.grid, r)
            if self.precise_bn > 0:
                self.broadcast(
                    p1_client.PRECISE_BN,
                    {
                        "experiment": self.experiment,
                        "overrides": self.overrides,
                        "samples": self.precise_bn,
                    },
                    ledger,
                    "eval",
                    round_=r,
                )
            metrics.update(runner.evaluate_round(self.grid, r))
            self.row(label, "finetune", r, rounds, metrics, ledger, t)

    # ------------------------------------------------------------------ outputs
    def write_ledger(self) -> None:
        rows = [
            {"method": label, **rec}
            for label, ledger in self.ledgers.items()
            for rec in ledger.to_records()
        ]
        cols = ["method", "direction", "stage", "kind", "bytes", "channel_uses", "round", "client"]
        with atomic_write(self.results.dir / "ledger.csv") as fh:
            fh.write(",".join(cols) + "\n")
            for r in rows:
                fh.write(",".join(str(r[c]) for c in cols) + "\n")
        with atomic_write(self.results.dir / "ledger.json") as fh:
            json.dump(
                {
                    "summary": {lab: led.summary() for lab, led in self.ledgers.items()},
                    "transfers": rows,
                },
                fh,
                indent=1,
            )

    def plots(self) -> None:
        rows = [r for r in self.results.rows if r["stage"] == "finetune"]
        by_rounds: dict[str, tuple[list[float], list[float]]] = {}
        by_bits: dict[str, tuple[list[float], list[float]]] = {}
        for r in rows:
            xs, ys = by_rounds.setdefault(r["method"], ([], []))
            xs.append(r["round"])
            ys.append(r["test_accuracy"])
            bx, by = by_bits.setdefault(r["method"], ([], []))
            bx.append(max(float(r["bits"]), 1.0))
            by.append(r["test_accuracy"])
        title = (
            f"SNR {self.cfg.channel.get('snr_db', '?')} dB, "
            f"{100 * float(self.cfg.data.label_fraction):g}% labels"
        )
        plot_lines(
            self.results.dir / "accuracy_vs_rounds.png",
            by_rounds,
            xlabel="Stage-II round",
            ylabel="test accuracy",
            title=title,
        )
        plot_lines(
            self.results.dir / "accuracy_vs_bits.png",
            by_bits,
            xlabel="cumulative Stage-II bits (features + gradients)",
            ylabel="test accuracy",
            title=title,
            logx=True,
        )


def summarize(
    rows: Sequence[dict[str, Any]],
    methods: dict[str, dict[str, Any]],
    ledgers: dict[str, CommLedger],
    target_setting: float | None,
) -> dict[str, Any]:
    """``summary.json``'s content from the metric rows (schema in docs/paper1.md).

    The target accuracy is ``target_setting`` when given, else the supervised baseline's
    final Stage II accuracy, else the lowest final accuracy among the methods. A method
    reaches it in the first Stage II round whose test accuracy is >= target - 1e-9.
    """
    finals: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["stage"] == "finetune":
            finals.setdefault(r["method"], []).append(r)
    final_acc = {m: float(rs[-1]["test_accuracy"]) for m, rs in finals.items() if rs}
    if target_setting is not None:
        target, source = float(target_setting), "experiment.target_accuracy"
    elif "supervised" in final_acc and methods.get("supervised", {}).get("status") == "ok":
        target, source = final_acc["supervised"], "final accuracy of supervised"
    elif final_acc:
        target, source = min(final_acc.values()), "lowest final accuracy among the methods"
    else:
        target, source = math.nan, "none (no Stage II round completed)"
    out_methods: dict[str, Any] = {}
    for label, info in methods.items():
        rs = finals.get(label, [])
        accs = [float(r["test_accuracy"]) for r in rs]
        reach = next((r for r in rs if float(r["test_accuracy"]) >= target - 1e-9), None)
        ledger = ledgers.get(label, CommLedger())
        s1 = stage_bits(ledger, "pretrain")
        s2 = stage_bits(ledger, "finetune")
        out_methods[label] = {
            **info,
            "best_accuracy": max(accs) if accs else None,
            "final_accuracy": accs[-1] if accs else None,
            "finetune_rounds": len(rs),
            "stage2_rounds_to_target": int(reach["round"]) if reach else None,
            "stage2_bits_to_target": float(reach["bits"]) if reach else None,
            "stage1_bits": float(8 * (s1["up_bytes"] + s1["down_bytes"])),
            "stage1_control_bits": float(8 * s1["control_bytes"]),
            "stage2_bits": float(8 * (s2["up_bytes"] + s2["down_bytes"])),
            "stage2_control_bits": float(8 * s2["control_bytes"]),
            "stage2_channel_uses": int(s2["channel_uses"]),
        }
    ratio = None
    dec, sup = out_methods.get("decur"), out_methods.get("supervised")
    if dec and sup and dec["stage2_bits_to_target"] and sup["stage2_bits_to_target"]:
        ratio = dec["stage2_bits_to_target"] / sup["stage2_bits_to_target"]
    return {
        "target_accuracy": target,
        "target_source": source,
        "decur_to_supervised_bits_ratio": ratio,
        "methods": out_methods,
    }


def _table(summary: dict[str, Any]) -> list[str]:
    head = (
        f"{'method':<14}{'best acc':>9}{'final acc':>10}{'rounds→target':>15}"
        f"{'S-II bits→target':>18}{'S-I bits':>11}  status"
    )
    lines = [f"target accuracy {summary['target_accuracy']:.4f} ({summary['target_source']})", head]

    def fmt(v: Any, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    for label, m in summary["methods"].items():
        lines.append(
            f"{label:<14}{fmt(m['best_accuracy'], '.4f'):>9}{fmt(m['final_accuracy'], '.4f'):>10}"
            f"{fmt(m['stage2_rounds_to_target'], 'd'):>15}"
            f"{fmt(m['stage2_bits_to_target'], '.4g'):>18}{m['stage1_bits']:>11.4g}  {m['status']}"
        )
    if summary["decur_to_supervised_bits_ratio"] is not None:
        lines.append(
            "DeCUR / supervised Stage-II bits to target: "
            f"{summary['decur_to_supervised_bits_ratio']:.3f}"
        )
    return lines


def run(grid: Grid, cfg: DictConfig, context: Context) -> dict[str, Any]:
    """Run every method of ``experiment.methods``; write the results folder; log the table."""
    check_pretrain_config(cfg)
    torch.set_num_threads(int(cfg.num_threads))
    methods = [method_key(m) for m in cfg.experiment.methods]
    state = _Run(grid, cfg, context)
    log(
        INFO,
        "paper 1: methods %s | Stage I %d rounds | Stage II %d rounds | %d devices | results %s",
        ", ".join(METHOD_LABELS[m] for m in methods),
        int(cfg.pretrain.rounds),
        int(cfg.strategy.rounds),
        len(state.clients),
        state.results.dir,
    )
    for method in methods:
        state.run_method(method)
        state.write_ledger()
    target = cfg.experiment.get("target_accuracy")
    summary = summarize(
        state.results.rows, state.methods, state.ledgers, None if target is None else float(target)
    )
    summary.update(
        {
            "experiment": str(cfg.experiment.name),
            "snr_db": float(cfg.channel.get("snr_db", math.nan)),
            "channel": str(cfg.channel.name),
            "label_fraction": float(cfg.data.label_fraction),
            "devices_per_modality": int(cfg.data.devices_per_modality),
            "wall_time_s": time.perf_counter() - state.t_start,
            "results_dir": str(state.results.dir.resolve()),
        }
    )
    state.results.write_summary(summary)
    state.plots()
    for line in _table(summary):
        log(INFO, "%s", line)
    log(INFO, "results folder: %s", state.results.dir.resolve())
    diverged = [m for m, i in summary["methods"].items() if i["status"] != "ok"]
    if diverged and bool(cfg.experiment.get("fail_on_divergence", True)):
        raise RuntimeError(
            "training diverged: "
            + "; ".join(str(summary["methods"][m].get("error")) for m in diverged)
        )
    return summary
