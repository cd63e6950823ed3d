"""Helpers shared by the experiment runners: output folder, waiting for nodes."""

from __future__ import annotations

import time
from logging import INFO

from flwr.common.logger import log
from flwr.serverapp import Grid

from flwr_semcom.config import output_root, project_root

__all__ = ["output_root", "project_root", "wait_for_nodes"]


def wait_for_nodes(grid: Grid, num_nodes: int, timeout: float = 60.0) -> list[int]:
    """Wait until at least ``num_nodes`` nodes are connected; return them sorted."""
    deadline = time.monotonic() + timeout
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < num_nodes:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(nodes)} of {num_nodes} nodes connected after {timeout:.0f} s; "
                "start more SuperNodes or lower num-supernodes"
            )
        time.sleep(0.5)
        nodes = sorted(grid.get_node_ids())
    if len(nodes) > num_nodes:
        log(INFO, "%d nodes connected, using the first %d", len(nodes), num_nodes)
    return nodes
