#!/usr/bin/env bash
# Create or refresh .venv and install the project. `scripts/setup.sh dev` adds the dev extra.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "dev" ]; then
  .venv/bin/python -m pip install -q -e '.[dev]'
else
  .venv/bin/python -m pip install -q -e .
fi
# `source .venv/bin/activate` also turns Flower's runtime dependency installation off, so that a
# plain `flwr run .` runs on this venv instead of uv-installing the app's dependencies (a second
# torch with CUDA wheels) into a fresh environment for every run (README, "flwr run").
if ! grep -q FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION .venv/bin/activate; then
  {
    echo ''
    echo '# added by flwr-semcom scripts/setup.sh: no per-run dependency install by `flwr run`'
    echo 'export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1'
  } >> .venv/bin/activate
fi
