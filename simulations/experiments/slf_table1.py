"""Experiment ``slf_table1``: paper 2's Table I and Fig. 3, SLF side by side with FedAvg.

Choi et al., arXiv 2310.09394, Sec. IV. For each misalignment case — channel dissimilarity
(T1 sends to T2) and source dissimilarity (T3 sends to T1) — and each number of frozen layers
``n`` in ``strategy.freeze_layers``, the runner re-installs the pre-trained pair on the two
nodes (partition 0 = transmitter i, partition 1 = receiver j), scores the misaligned link once,
runs :class:`~strategies.slf.SLFStrategy`, and runs the FedAvg alignment baseline
(:class:`~strategies.fedavg_alignment.FedAvgAlignment`). The Table I point is at the link
crossover ``channel.crossover`` and the case's ε; Fig. 3 adds the points of
``strategy.sweep.crossover`` (channel case) and ``strategy.sweep.epsilon`` (source case).

Results folder (``outputs/slf_table1/<stamp>/``): ``table1.csv`` (one row per case x task x
method x n at the Table I point), ``table1.md`` (laid out like the paper's Table I, paper
values beside ours), ``sweep.csv`` (every point), ``fedavg_history.csv`` (per round),
``fig3_*.png``, ``bytes_vs_quality.png``, ``summary.json``, ``ledger.csv/json``, ``config.yaml``.

Run: ``flwr run . --run-config 'experiment="slf_table1"'`` or
``semcom-run --experiment slf_table1``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from logging import INFO
from typing import Any

from flwr.app import ConfigRecord, Context, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from omegaconf import DictConfig

from flwr_semcom.accounting import CommLedger, atomic_write
from flwr_semcom.alignment import messages as P
from flwr_semcom.alignment.recovery import RecoveryModel
from flwr_semcom.results import Results, write_csv
from flwr_semcom.runtime.messaging import ClientInfo
from flwr_semcom.slf.report import TASKS, plot_fig3, table1_markdown
from flwr_semcom.slf.settings import CASES, check_slf_config
from simulations.common import wait_for_nodes
from simulations.experiments._resume import Progress
from strategies.fedavg_alignment import FedAvgAlignment
from strategies.slf import Link, SLFStrategy, aligned_transmission, exchange

TABLE_COLUMNS = (
    "case",
    "task",
    "method",
    "n",
    "crossover",
    "epsilon",
    "unfrozen_params",
    "download_bytes",
    "upload_bytes",
    "upload_mb",
    "flops",
    "recovery_time_s",
    "finetune_wall_s",
    "wall_time_s",
    "mse",
    "accuracy",
    "baseline_mse",
    "baseline_accuracy",
    "rounds",
    "val_mse",
    "val_accuracy",
    "baseline_val_mse",
    "baseline_val_accuracy",
)


@dataclass(frozen=True)
class Point:
    """One misalignment setting: the case, the link crossover and i's data dissimilarity."""

    case: str
    crossover: float
    epsilon: float
    table: bool  # the Table I point of its case


def num_nodes(cfg: DictConfig) -> int:
    """The launcher starts two SuperNodes: transmitter (partition 0) and receiver (1)."""
    return 2


def sweep_points(cfg: DictConfig) -> list[Point]:
    """Table I points first, then the Fig. 3 sweep points not already covered."""
    s = cfg.strategy
    p0 = float(cfg.channel.crossover)
    eps = {case: float(s.cases[case].epsilon) for case in CASES}
    points = [Point(case, p0, eps[case], True) for case in CASES]
    for p in s.sweep.crossover:
        if float(p) != p0:
            points.append(Point("channel", float(p), eps["channel"], False))
    for e in s.sweep.epsilon:
        if float(e) != eps["source"]:
            points.append(Point("source", p0, float(e), False))
    return points


def install_pair(
    grid: Grid, nodes: Sequence[int], cfg: DictConfig, point: Point, timeout: float
) -> tuple[int, int]:
    """Install fresh pre-trained transceivers (``train.slf_setup``); return ``(i, j)``."""
    spec = cfg.strategy.cases[point.case]
    config = ConfigRecord(
        {
            "transmitter": str(spec.transmitter),
            "receiver": str(spec.receiver),
            "source": str(spec.source),
            "epsilon": point.epsilon,
        }
    )
    probes = [ClientInfo(node, -1, "?") for node in nodes]
    contents = [RecordDict({"config": config}) for _ in nodes]
    replies = exchange(grid, probes, P.SETUP, timeout, contents)
    by_partition = {int(P.metric(r, "partition-id")): node for node, r in zip(nodes, replies)}
    if sorted(by_partition) != [0, 1]:
        raise RuntimeError(
            f"SLF needs partition-id 0 (transmitter) and 1 (receiver); got {sorted(by_partition)}"
        )
    return by_partition[0], by_partition[1]


@dataclass
class _Sweep:
    """What every point of the sweep shares: the grid, the nodes, the ledger, the results."""

    grid: Grid
    nodes: list[int]
    cfg: DictConfig
    ledger: CommLedger
    recovery: RecoveryModel
    results: Results
    timeout: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.results.add(row)

    def snapshot(self) -> dict[str, Any]:
        """What the finished units produced (a :class:`Progress` snapshot)."""
        return {"rows": self.rows, "history": self.history, "ledger": self.ledger.to_records()}

    def restore(self, snap: dict[str, Any]) -> None:
        """Continue after the units of ``snap`` (rows, FedAvg history, ledger)."""
        self.rows = [dict(r) for r in snap.get("rows", [])]
        self.results.rows = [dict(r) for r in self.rows]
        self.history = [dict(h) for h in snap.get("history", [])]
        self.ledger.extend(CommLedger.from_records(snap.get("ledger", [])).rows)
        self.results.write_metrics()
        self.results.write_ledger(self.ledger)

    def _unit(self, progress: Progress | None, name: str) -> bool:
        """Whether unit ``name`` is still to run (False: finished in an earlier attempt)."""
        return progress is None or not progress.is_done(name)

    def _val(self, link: Link) -> dict[str, float]:
        """``val_mse`` / ``val_accuracy`` of what the nodes hold now: i's validation images
        through the same link (reporting only, not in the ledger; ``{}`` without
        ``data.val_fraction``). Nothing is selected on them or on the test scores."""
        if not float(self.cfg.data.get("val_fraction", 0.0)):
            return {}
        val = aligned_transmission(self.grid, link, None, self.timeout, part="val")
        return {"val_mse": val["mse"], "val_accuracy": val["accuracy"]}

    def _save(self, progress: Progress | None, name: str) -> None:
        if progress is not None:
            progress.save(name, self.snapshot())

    def point(self, point: Point, progress: Progress | None = None, index: int = 0) -> None:
        """Misaligned baseline, SLF for every n, and (Table I points) FedAvg at one point.

        Units ``<index>:<tag>/misaligned``, ``…/slf<k>-n<n>`` (k-th entry of
        ``freeze_layers``), ``…/fedavg``, each starting from the freshly installed pre-trained
        pair; the units ``progress`` has finished are skipped."""
        s = self.cfg.strategy
        i, j = install_pair(self.grid, self.nodes, self.cfg, point, self.timeout)
        tag = f"{point.case}/p={point.crossover:g}/eps={point.epsilon:g}"
        source = str(s.cases[point.case].source)
        link = Link(i, j, point.crossover, source, point.epsilon, int(s.eval_seed), tag)
        unit = f"{index}:{tag}"
        fresh = True  # the nodes hold the pre-trained pair as installed
        if self._unit(progress, f"{unit}/misaligned"):
            base = aligned_transmission(
                self.grid, replace(link, tag=f"{tag}/misaligned"), self.ledger, self.timeout
            )
            base_val = self._val(link)
            log(
                INFO,
                "SLF %s: misaligned MSE %.4f accuracy %.4f",
                tag,
                base["mse"],
                base["accuracy"],
            )
            self.add(
                {
                    **self._common(point, base),
                    "method": "misaligned",
                    "n": "",
                    "mse": base["mse"],
                    "accuracy": base["accuracy"],
                    **base_val,
                }
            )
            self._save(progress, f"{unit}/misaligned")
        mis = next(
            r
            for r in self.rows
            if r["method"] == "misaligned"
            and (r["case"], r["crossover"], r["epsilon"])
            == (point.case, point.crossover, point.epsilon)
        )
        common = self._common(point, {"mse": mis["mse"], "accuracy": mis["accuracy"]})
        common.update({f"baseline_{k}": v for k, v in mis.items() if k.startswith("val_")})
        for k, n in enumerate(int(x) for x in s.freeze_layers):
            if not self._unit(progress, f"{unit}/slf{k}-n{n}"):
                continue
            if not fresh:  # the previous run changed both nodes: install the pre-trained pair
                install_pair(self.grid, self.nodes, self.cfg, point, self.timeout)
            fresh = False
            strategy = SLFStrategy(
                n, self.recovery, ledger=self.ledger, seed=int(self.cfg.seed), timeout=self.timeout
            )
            res = strategy.start(self.grid, replace(link, tag=f"{tag}/slf-n{n}"))
            self.add(
                {
                    **common,
                    "method": "slf",
                    "n": n,
                    **res.as_dict(),
                    "upload_mb": res.upload_bytes / 1e6,
                    **self._val(link),
                }
            )
            log(
                INFO,
                "SLF %s n=%d: upload %d B, recovery %.3f s, MSE %.4f, accuracy %.4f (%.1f s)",
                tag,
                n,
                res.upload_bytes,
                res.recovery_time_s,
                res.mse,
                res.accuracy,
                res.wall_time_s,
            )
            self._save(progress, f"{unit}/slf{k}-n{n}")
        if (point.table or bool(s.sweep.fedavg)) and self._unit(progress, f"{unit}/fedavg"):
            install_pair(self.grid, self.nodes, self.cfg, point, self.timeout)
            fedavg = FedAvgAlignment(
                replace(link, tag=f"{tag}/fedavg"),
                self.recovery,
                ledger=self.ledger,
                timeout=self.timeout,
            )
            out = fedavg.run(self.grid, int(s.fedavg.rounds))
            measured = {
                k: v for k, v in out.as_dict().items() if k not in ("history", "model_params")
            }
            self.add(
                {
                    **common,
                    "method": "fedavg",
                    "n": "",
                    "unfrozen_params": out.model_params,
                    **measured,
                    "upload_mb": out.upload_bytes / 1e6,
                    **self._val(link),
                }
            )
            self.history += [{**common, **h} for h in out.history]
            log(
                INFO,
                "FedAvg %s: %d rounds, %d B, recovery %.3f s, MSE %.4f, accuracy %.4f",
                tag,
                out.rounds,
                out.download_bytes + out.upload_bytes,
                out.recovery_time_s,
                out.mse,
                out.accuracy,
            )
            self._save(progress, f"{unit}/fedavg")

    @staticmethod
    def _common(point: Point, base: dict[str, Any]) -> dict[str, Any]:
        return {
            "case": point.case,
            "crossover": point.crossover,
            "epsilon": point.epsilon,
            "table": point.table,
            "baseline_mse": base["mse"],
            "baseline_accuracy": base["accuracy"],
        }

    def write(self, wall: float) -> dict[str, Any]:
        """table1.csv/md, sweep.csv, fedavg_history.csv, plots, ledger, summary.json."""
        folder = self.results.dir
        ns = [int(n) for n in self.cfg.strategy.freeze_layers]
        table_rows = [
            {**r, "task": task}
            for r in self.rows
            if r["table"] and r["method"] != "misaligned"
            for task in TASKS
        ]
        write_csv(folder / "table1.csv", table_rows, TABLE_COLUMNS)
        write_csv(folder / "sweep.csv", self.rows)
        write_csv(folder / "fedavg_history.csv", self.history)
        with atomic_write(folder / "table1.md") as fh:
            fh.write(table1_markdown(table_rows, ns))
        plot_fig3(folder, self.rows, self.history, ns)
        self.results.write_ledger(self.ledger)
        summary = {
            "results_dir": str(folder.resolve()),
            "sweep_wall_time_s": wall,
            "points": len({(r["case"], r["crossover"], r["epsilon"]) for r in self.rows}),
            "slf_runs": sum(r["method"] == "slf" for r in self.rows),
            "fedavg_runs": sum(r["method"] == "fedavg" for r in self.rows),
            "ledger": self.ledger.summary(),
        }
        self.results.write_summary(summary)
        return summary


def run(grid: Grid, cfg: DictConfig, context: Context) -> dict[str, Any]:
    """Run the Table I / Fig. 3 sweep and write the results folder.

    Resumable per unit (``<i>:<case>/p=…/eps=…/{misaligned,slf<k>-n<n>,fedavg}``,
    :mod:`simulations.experiments._resume`) with ``reliability.resume``."""
    check_slf_config(cfg)
    progress = Progress.open(cfg, context)
    results = Results(progress.dir)
    if progress.finished:
        return progress.summary()
    if not progress.resumed:
        results.save_config(cfg)
    s = cfg.strategy
    sweep = _Sweep(
        grid=grid,
        nodes=wait_for_nodes(grid, 2, timeout=120.0)[:2],
        cfg=cfg,
        ledger=CommLedger(),
        recovery=RecoveryModel(
            float(s.recovery.dl_mbps), float(s.recovery.ul_mbps), float(s.recovery.device_tflops)
        ),
        results=results,
        timeout=float(s.timeout),
    )
    if progress.resumed:
        sweep.restore(progress.state)
    progress.restore_rng()
    for index, point in enumerate(sweep_points(cfg)):
        sweep.point(point, progress, index)
    wall = time.perf_counter() - progress.t_start
    summary = sweep.write(wall)
    log(INFO, "slf_table1: %.1f s, results in %s", wall, results.dir.resolve())
    progress.finish()
    return summary
