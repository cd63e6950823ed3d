"""The layering of docs/architecture.md, checked on the source text (no imports executed).

- *generic* library modules (every ``flwr_semcom`` module outside the paper packages and the
  edge modules) never import a paper package, an edge module, ``strategies`` or
  ``simulations`` — neither with an ``import`` statement nor through an ``importlib`` string;
- ``strategies`` import only the generic library (no paper package, no hydra / omegaconf, so
  no strategy can take a ``DictConfig``);
- no module of ``flwr_semcom``, ``strategies`` or ``simulations`` exceeds 400 lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPER = ("flwr_semcom.paper1", "flwr_semcom.slf", "flwr_semcom.multitask")
EDGE = ("flwr_semcom.config", "flwr_semcom.client_app", "flwr_semcom.run_config")
APPS = ("strategies", "simulations")
HYDRA = ("omegaconf", "hydra")
MAX_LINES = 400
_MODULE_STRING = re.compile(r"^(flwr_semcom|strategies|simulations)(\.[A-Za-z_]\w*)*$")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def imports_of(path: Path, module: str | None = None) -> set[str]:
    """Modules ``path`` (the module ``module``, default: from its place in the checkout)
    imports: import statements (relative ones resolved) and string constants that name one
    of this project's modules (``importlib.import_module("…")``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module or _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _MODULE_STRING.match(node.value)
            and "." in node.value
        ):
            found.add(node.value)
    return found


def layer_of(module: str) -> str:
    if _within(module, PAPER):
        return "paper"
    if _within(module, EDGE):
        return "edge"
    if _within(module, APPS):
        return module.split(".")[0]
    return "generic"


GENERIC_FILES = [p for p in _sources("flwr_semcom") if layer_of(_module_name(p)) == "generic"]


def test_the_walk_sees_imports_and_importlib_strings(tmp_path: Path) -> None:
    """The checker itself: a file with each kind of import is read correctly."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib\n"
        "from flwr_semcom.paper1 import tasks\n"
        "from .slf import client\n"
        "importlib.import_module('simulations.launch')\n"
        "x = 'not.a.project.module'\n"
    )
    found = imports_of(probe, "flwr_semcom.probe")
    assert "flwr_semcom.paper1" in found
    assert "flwr_semcom.slf" in found and "flwr_semcom.slf.client" in found
    assert "simulations.launch" in found
    assert "not.a.project.module" not in found
    assert layer_of("flwr_semcom.paper1.tasks") == "paper"
    assert layer_of("flwr_semcom.config") == "edge"
    assert layer_of("flwr_semcom.split.client") == "generic"
    assert layer_of("strategies.slf") == "strategies"


@pytest.mark.parametrize("path", GENERIC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_generic_module_imports_no_paper_edge_or_app_code(path: Path) -> None:
    bad = sorted(m for m in imports_of(path) if layer_of(m) != "generic" and _project(m))
    assert not bad, f"{path.relative_to(ROOT)} (generic) imports {bad}"


@pytest.mark.parametrize("path", _sources("strategies"), ids=lambda p: str(p.relative_to(ROOT)))
def test_strategies_import_only_the_generic_library(path: Path) -> None:
    found = imports_of(path)
    bad = sorted(m for m in found if _project(m) and layer_of(m) not in ("generic", "strategies"))
    hydra = sorted(m for m in found if _within(m, HYDRA))
    assert not bad, f"{path.relative_to(ROOT)} imports paper/edge/app code {bad}"
    assert not hydra, f"{path.relative_to(ROOT)} imports {hydra}: strategies take typed values"


def _project(module: str) -> bool:
    return _within(module, ("flwr_semcom", *APPS))


@pytest.mark.parametrize(
    "path",
    _sources("flwr_semcom", "strategies", "simulations"),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_module_over_400_lines(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (> {MAX_LINES}): split it"
