"""docs/api.md is the public API: every python block runs, every listed name imports.

Each fenced ``python`` block is a complete program; it runs in a fresh namespace with the
project root as the working directory (blocks may read ``../shared/data``). The tables
``| `module` | `name`, `name` |`` list the public names; each must be an attribute of its
module.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api.md"
TEXT = API.read_text()

BLOCKS = [
    (TEXT.count("\n", 0, m.start()) + 2, m.group(1))
    for m in re.finditer(r"^```python\n(.*?)^```$", TEXT, flags=re.M | re.S)
]
ROWS = [
    (m.group(1), re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", m.group(2)))
    for m in re.finditer(r"^\| `([a-z_][a-z0-9_.]*)` \| (.+) \|$", TEXT, flags=re.M)
]


def test_page_has_examples_and_name_tables() -> None:
    assert len(BLOCKS) >= 13
    assert len(ROWS) >= 30
    assert "COORDINATOR" not in TEXT and "TODO" not in TEXT
    modules = {module for module, _ in ROWS}
    needed = {
        "flwr_semcom.split",
        "strategies.split_training",
        "flwr_semcom.fedavg",
        "flwr_semcom.runtime",
        "strategies.pretrain",
        "strategies.fedavg_modality",
        "flwr_semcom.alignment",
        "strategies.slf",
        "strategies.fedavg_alignment",
        "strategies.fedavg_multitask",
        "flwr_semcom.results",
        "simulations.aggregate",
        "flwr_semcom.stats",
        "flwr_semcom.rules",
    }
    assert needed <= modules, sorted(needed - modules)


@pytest.mark.parametrize(
    "module",
    [
        "flwr_semcom.alignment",
        "flwr_semcom.runtime",
        "flwr_semcom.stats",
        "strategies.pretrain",
        "strategies.fedavg_modality",
        "strategies.slf",
        "strategies.fedavg_alignment",
        "flwr_semcom.fedavg",
    ],
)
def test_every_exported_name_is_listed(module: str) -> None:
    """A module's ``__all__`` is its public API, so each name in it is on the page."""
    listed = {n for m, names in ROWS if m == module for n in names}
    exported = set(importlib.import_module(module).__all__)
    assert exported <= listed, f"{module}: not on docs/api.md: {sorted(exported - listed)}"


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_python_block_runs(line: int, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": f"api_md_line{line}"}
    exec(compile(code, f"{API}:{line}", "exec"), namespace)  # noqa: S102 - the docs' examples


@pytest.mark.parametrize(("module", "names"), ROWS, ids=[m for m, _ in ROWS])
def test_listed_names_import(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert names and not missing, f"{module} lacks {missing}"
