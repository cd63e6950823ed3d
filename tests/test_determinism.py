"""The same seed gives byte-equal results for every experiment (issue #17, item 4).

Whatever the order in which replies arrive and whatever node IDs Flower draws: each test runs
one experiment twice, in process, on its tiny configuration, through the runner the ServerApp
calls (``simulations.experiments.<runner>.run``) with the bundled ClientApp, on two grids that
give the nodes other random 64-bit IDs (listed in another order) and hand every batch of
replies back in another shuffled order; then it compares the results folders. Wall-clock
fields (:data:`_runs.WALL`) are the only ones allowed to differ. multitask has its own tests
(test_multitask_determinism.py, in process; test_multitask_simulation.py, Ray simulation).

Slow (``-m slow``): 2 × one tiny run per experiment.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from _runs import (  # tests/ is on sys.path
    FILES,
    PAPER1_FILES,
    PAPER1_TINY,
    SLF_SMALL,
    SPLIT_TINY,
    ScrambledGrid,
    fingerprint,
    run_in_process,
)

pytestmark = pytest.mark.slow

#: Node IDs as Flower draws them (random 64-bit numbers), two sets, listed in other orders.
NODE_IDS = (
    [2**63 - 25, 17, 2**40 + 3, 6_011_355_102_998_147_433, 88, 2**33],
    [404, 2**62 + 1, 9_113_487_001, 3, 2**64 - 2, 7_000],
)

#: (experiment, overrides on top of its tiny config, files compared)
CASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # paper 1: one Stage I pass, two Stage II rounds; DeCUR's Stage I is split learning
    # (placement auto -> split), supervised is Stage II only
    "multimodal": (
        "multimodal",
        f"{PAPER1_TINY} pretrain.rounds=1 experiment.methods=[decur,supervised]",
        PAPER1_FILES,
    ),
    # the README's main job (cosine lr, 10 % labels) on the same tiny data
    "main": (
        "main",
        f"{PAPER1_TINY} pretrain.rounds=1 experiment.methods=[decur,supervised]",
        PAPER1_FILES,
    ),
    # paper 1's FedAvg paths: three devices per modality (a float32 sum of two is the same in
    # either order; of three it is not), Barlow Twins' local Stage I averaged per modality,
    # the FedAvg-per-modality alignment of Stage II
    "multimodal-fedavg": (
        "multimodal",
        f"{PAPER1_TINY} pretrain.rounds=1 strategy.rounds=1 data.devices_per_modality=3 "
        "experiment.methods=[barlow_twins] experiment.target_accuracy=0.5 "
        "finetune.precise_bn_samples=0",
        PAPER1_FILES,
    ),
    # SLF: n = 0 (re-initialise) and n = 2, both cases, the FedAvg baseline (2 rounds)
    "slf_table1": ("slf_table1", f"{SLF_SMALL} strategy.freeze_layers=[0,2]", FILES["slf_table1"]),
    "split_supervised": ("split_supervised", SPLIT_TINY, FILES["split_supervised"]),
}


def run_scrambled(
    experiment: str, overrides: str, out: Path, node_ids: Sequence[int], order_seed: int
) -> tuple[Path, list[int]]:
    """One run of ``experiment`` on a :class:`ScrambledGrid`; its results folder and the
    partition order in which replies were handed to the server."""
    _, grid = run_in_process(
        experiment,
        overrides,
        out,
        grid=lambda nodes, rc: ScrambledGrid(nodes, rc, node_ids[: len(nodes)], order_seed),
    )
    assert isinstance(grid, ScrambledGrid)
    (folder,) = (out / experiment).iterdir()  # experiment.name is the experiment here
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
