"""Shared by the tests that run whole experiments on tiny configurations.

- :data:`TINY`: each experiment's tiny overrides (paper 1, SLF and multitask keep theirs in
  their own test modules; ``split_supervised``'s is :data:`SPLIT_TINY`);
- :data:`WALL`: the fields that measure time, the only ones two runs of a seed may differ in;
  :data:`FILES`: the results files compared per experiment; :func:`fingerprint`: those files
  as comparable text, wall times removed;
- :class:`ScrambledGrid`: an in-process grid with other node IDs, listed and answering in a
  shuffled order; :func:`run_in_process`: one run through the experiment's runner;
- :func:`strict_json`: parse a file as strict JSON (a bare ``NaN`` / ``Infinity`` fails).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import test_multitask_federated  # tests/ is on sys.path
import test_paper1_e2e
import test_slf
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import compose_config
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.results import WALL_FIELDS
from simulations.preflight import nodes_needed
from simulations.server_app import load_runner

PAPER1_TINY: str = test_paper1_e2e.TINY
SLF_SMALL: str = test_slf.SMALL
MULTITASK_TINY: str = test_multitask_federated.TINY
SPLIT_TINY = (
    "data.num_samples=40 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
    "strategy.batch_size=8 strategy.rounds=2"
)
TINY: dict[str, str] = {
    "multimodal": PAPER1_TINY,
    "slf_table1": SLF_SMALL,
    "multitask": MULTITASK_TINY,
    "split_supervised": SPLIT_TINY,
}

#: Every field that measures time (csv columns and json keys at any depth), plus
#: ``results_dir``: the only fields two runs of the same seed may differ in
#: (:data:`flwr_semcom.results.WALL_FIELDS`; a name that is not written is harmless).
WALL = WALL_FIELDS
#: table1.md has one row of measured wall times ("Measured wall time here (s)")
MD_WALL_ROW = "wall time"

#: Results files compared per experiment (csv: without WALL columns; json: without WALL keys).
PAPER1_FILES = ("metrics.csv", "metrics.json", "ledger.csv", "ledger.json", "summary.json")
FILES: dict[str, tuple[str, ...]] = {
    "multimodal": PAPER1_FILES,
    "slf_table1": (
        "metrics.csv",
        "table1.csv",
        "table1.md",
        "sweep.csv",
        "fedavg_history.csv",
        "ledger.csv",
        "ledger.json",
        "summary.json",
    ),
    "multitask": (
        "metrics.csv",
        "final.csv",
        "gains.csv",
        "table.md",
        "gains.md",
        "ledger.csv",
        "ledger.json",
        "summary.json",
    ),
    "split_supervised": PAPER1_FILES,
}


def without_wall(value: Any) -> Any:
    """``value`` without :data:`WALL` keys, at any depth."""
    if isinstance(value, dict):
        return {k: without_wall(v) for k, v in value.items() if k not in WALL}
    if isinstance(value, list):
        return [without_wall(v) for v in value]
    return value


def fingerprint(folder: Path, names: Sequence[str]) -> dict[str, str]:
    """The results files as text: csv without :data:`WALL` columns, json without
    :data:`WALL` keys, markdown without its wall-time row; everything else byte for byte."""
    out: dict[str, str] = {}
    for name in names:
        text = (folder / name).read_text()
        if name.endswith(".csv"):
            rows = list(csv.reader(io.StringIO(text)))
            keep = [i for i, col in enumerate(rows[0]) if col not in WALL] if rows else []
            text = "\n".join(",".join(r[i] for i in keep) for r in rows)
        elif name.endswith(".json"):
            text = json.dumps(without_wall(json.loads(text)), indent=1)
        elif name.endswith(".md"):
            text = "\n".join(ln for ln in text.splitlines() if MD_WALL_ROW not in ln.lower())
        out[name] = text
    return out


def strict_json(path: Path) -> Any:
    """``path`` parsed as strict JSON (RFC 8259): ``NaN`` / ``Infinity`` raise ValueError."""

    def refuse(token: str) -> None:
        raise ValueError(f"{path}: non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


class ScrambledGrid(InProcessGrid):
    """The in-process grid with other node IDs, listed in a shuffled order, that hands every
    batch of replies back in a shuffled order (as replies arrive over a network)."""

    def __init__(
        self,
        node_configs: Sequence[Mapping[str, Any]],
        run_config: Mapping[str, Any],
        node_ids: Sequence[int],
        order_seed: int,
        app: ClientApp = client_app,
    ) -> None:
        super().__init__(app, node_configs, run_config)
        self._order = random.Random(order_seed)
        pairs = list(zip(node_ids, self.contexts.values()))
        self._order.shuffle(pairs)  # get_node_ids() no longer lists partitions in order
        self.contexts = {
            new: Context(ctx.run_id, new, ctx.node_config, ctx.state, ctx.run_config)
            for new, ctx in pairs
        }
        self.reply_order: list[int] = []  # partition ids, in the order replies were handed out

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        # sorted: the messaging layer asks for a set's ids (hash order differs per process),
        # so the shuffle below is the same in every process
        replies = list(super().pull_messages(sorted(message_ids)))
        self._order.shuffle(replies)
        self.reply_order += [
            int(self.contexts[r.metadata.src_node_id].node_config["partition-id"]) for r in replies
        ]
        return replies


GridFactory = Callable[[list[dict[str, int]], dict[str, str]], InProcessGrid]


def run_in_process(
    experiment: str,
    overrides: str,
    out: Path,
    extra: str = "",
    grid: GridFactory | None = None,
) -> tuple[dict[str, Any], InProcessGrid]:
    """One run of ``experiment`` (overrides ``overrides``, ``paths.output_dir=out``, ``extra``)
    through its runner, as the ServerApp calls it, on ``grid(node_configs, run_config)``
    (default: the bundled ClientApp on an :class:`InProcessGrid`); its summary and the grid."""
    over = f"{overrides} paths.output_dir={out} {extra}".strip()
    cfg = compose_config(experiment, over)
    n = nodes_needed(cfg)
    nodes = [{"partition-id": i, "num-partitions": n} for i in range(n)]
    run_config = {"experiment": experiment, "overrides": over}
    made = grid(nodes, run_config) if grid else InProcessGrid(client_app, nodes, run_config)
    summary = load_runner(str(cfg.experiment.runner))(made, cfg, made.server_context())
    return summary, made
