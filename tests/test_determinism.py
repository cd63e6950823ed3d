"""The same seed gives byte-equal results for every experiment (issue #17, item 4).

Whatever the order in which replies arrive and whatever node IDs Flower draws: each test runs
one experiment twice, in process, on its tiny configuration, through the runner the ServerApp
calls (``simulations.experiments.<runner>.run``) with the bundled ClientApp, on two grids that
give the nodes other random 64-bit IDs (listed in another order) and hand every batch of
replies back in another shuffled order; then it compares the results folders. Wall-clock
fields (:data:`WALL`) are the only ones allowed to differ. multitask has its own tests
(test_multitask_determinism.py, in process; test_multitask_simulation.py, Ray simulation).

Slow (``-m slow``): 2 × one tiny run per experiment.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Context, Message
from test_paper1_e2e import TINY as P1_TINY  # tests/ is on sys.path
from test_slf import SMALL as SLF_SMALL

from flwr_semcom.client_app import app as client_app
from flwr_semcom.config import compose_config
from flwr_semcom.inprocess import InProcessGrid
from simulations.preflight import nodes_needed
from simulations.server_app import load_runner

pytestmark = pytest.mark.slow

#: Every field that measures time, by name: csv columns and json keys (at any depth) that may
#: differ between two runs of the same seed; ``results_dir`` is the run's own folder. Checked
#: against what the runners write: metrics.csv ``round_time_s``, ``wall_time_s``; summary.json
#: ``elapsed_s``, ``wall_s``, ``stage1_time_s``, ``stage2_time_s``, ``finetune_wall_s``,
#: ``sweep_wall_time_s`` (a name that is not written is harmless).
WALL = frozenset(
    {
        "round_time_s",
        "wall_time_s",
        "stage1_time_s",
        "stage2_time_s",
        "elapsed_s",
        "wall_s",
        "finetune_wall_s",
        "sweep_wall_time_s",
        "results_dir",
    }
)
#: table1.md has one row of measured wall times ("Measured wall time here (s)")
MD_WALL_ROW = "wall time"

#: Node IDs as Flower draws them (random 64-bit numbers), two sets, listed in other orders.
NODE_IDS = (
    [2**63 - 25, 17, 2**40 + 3, 6_011_355_102_998_147_433, 88, 2**33],
    [404, 2**62 + 1, 9_113_487_001, 3, 2**64 - 2, 7_000],
)

#: (experiment, overrides on top of its tiny config, files compared)
PAPER1 = ("metrics.csv", "metrics.json", "ledger.csv", "ledger.json", "summary.json")
CASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # paper 1: one Stage I pass, two Stage II rounds; DeCUR's Stage I is split learning
    # (placement auto -> split), supervised is Stage II only
    "multimodal": (
        "multimodal",
        f"{P1_TINY} pretrain.rounds=1 experiment.methods=[decur,supervised]",
        PAPER1,
    ),
    # the README's main job (cosine lr, 10 % labels) on the same tiny data
    "main": ("main", f"{P1_TINY} pretrain.rounds=1 experiment.methods=[decur,supervised]", PAPER1),
    # paper 1's FedAvg paths: three devices per modality (a float32 sum of two is the same in
    # either order; of three it is not), Barlow Twins' local Stage I averaged per modality,
    # the FedAvg-per-modality alignment of Stage II
    "multimodal-fedavg": (
        "multimodal",
        f"{P1_TINY} pretrain.rounds=1 strategy.rounds=1 data.devices_per_modality=3 "
        "experiment.methods=[barlow_twins] experiment.target_accuracy=0.5 "
        "finetune.precise_bn_samples=0",
        PAPER1,
    ),
    # SLF: n = 0 (re-initialise) and n = 2, both cases, the FedAvg baseline (2 rounds)
    "slf_table1": (
        "slf_table1",
        f"{SLF_SMALL} strategy.freeze_layers=[0,2]",
        (
            "metrics.csv",
            "table1.csv",
            "table1.md",
            "sweep.csv",
            "fedavg_history.csv",
            "ledger.csv",
            "ledger.json",
            "summary.json",
        ),
    ),
    "split_supervised": (
        "split_supervised",
        "data.num_samples=40 data.image_size=8 model.num_symbols=4 model.decoder_hidden=8 "
        "strategy.batch_size=8 strategy.rounds=2",
        ("metrics.csv", "metrics.json", "ledger.csv", "ledger.json", "summary.json"),
    ),
}


class ScrambledGrid(InProcessGrid):
    """The in-process grid with other node IDs, listed in a shuffled order, that hands every
    batch of replies back in a shuffled order (as replies arrive over a network)."""

    def __init__(
        self,
        node_configs: Sequence[Mapping[str, Any]],
        run_config: Mapping[str, Any],
        node_ids: Sequence[int],
        order_seed: int,
    ) -> None:
        super().__init__(client_app, node_configs, run_config)
        self._order = random.Random(order_seed)
        pairs = list(zip(node_ids, self.contexts.values()))
        self._order.shuffle(pairs)  # get_node_ids() no longer lists partitions in order
        self.contexts = {
            new: Context(ctx.run_id, new, ctx.node_config, ctx.state, ctx.run_config)
            for new, ctx in pairs
        }
        self.reply_order: list[int] = []  # partition ids, in the order replies were handed out

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(super().pull_messages(message_ids))
        self._order.shuffle(replies)
        self.reply_order += [
            int(self.contexts[r.metadata.src_node_id].node_config["partition-id"]) for r in replies
        ]
        return replies


def _without_wall(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_wall(v) for k, v in value.items() if k not in WALL}
    if isinstance(value, list):
        return [_without_wall(v) for v in value]
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
            text = json.dumps(_without_wall(json.loads(text)), indent=1)
        elif name.endswith(".md"):
            text = "\n".join(ln for ln in text.splitlines() if MD_WALL_ROW not in ln.lower())
        out[name] = text
    return out


def run_scrambled(
    experiment: str, overrides: str, out: Path, node_ids: Sequence[int], order_seed: int
) -> tuple[Path, list[int]]:
    """One run of ``experiment`` on a :class:`ScrambledGrid`; its results folder and the
    partition order in which replies were handed to the server."""
    over = f"{overrides} paths.output_dir={out}"
    cfg = compose_config(experiment, over)
    n = nodes_needed(cfg)
    nodes = [{"partition-id": i, "num-partitions": n} for i in range(n)]
    grid = ScrambledGrid(
        nodes, {"experiment": experiment, "overrides": over}, node_ids[:n], order_seed
    )
    load_runner(str(cfg.experiment.runner))(grid, cfg, grid.server_context())
    (folder,) = (out / str(cfg.experiment.name)).iterdir()
    return folder, grid.reply_order


def test_the_scrambled_grid_scrambles_ids_listing_and_reply_order() -> None:
    rc = {"experiment": "split_supervised", "overrides": ""}
    nodes = [{"partition-id": i, "num-partitions": 4} for i in range(4)]
    ids = NODE_IDS[0][:4]
    grid = ScrambledGrid(nodes, rc, ids, order_seed=0)
    assert sorted(grid.get_node_ids()) == sorted(ids)
    listed = [grid.contexts[n].node_config["partition-id"] for n in grid.get_node_ids()]
    assert listed != [0, 1, 2, 3] and sorted(listed) == [0, 1, 2, 3]
    for node, ctx in grid.contexts.items():  # node i of the list serves partition i
        assert ids.index(node) == ctx.node_config["partition-id"]


@pytest.mark.parametrize("case", list(CASES))
def test_same_seed_gives_byte_equal_results_whatever_reply_order_and_node_ids(
    tmp_path: Path, case: str
) -> None:
    experiment, overrides, names = CASES[case]
    folder_a, order_a = run_scrambled(experiment, overrides, tmp_path / "a", NODE_IDS[0], 0)
    folder_b, order_b = run_scrambled(experiment, overrides, tmp_path / "b", NODE_IDS[1], 1)
    assert order_a != order_b  # the server saw the replies in other orders
    assert len(set(order_a)) > 1
    first, second = fingerprint(folder_a, names), fingerprint(folder_b, names)
    for name in names:
        assert first[name] == second[name], f"{case}: {name} differs between two runs"
