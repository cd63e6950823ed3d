#!/usr/bin/env bash
# The one check command: lint (ruff), types (mypy), tests (pytest). Run from anywhere.
# Extra arguments go to pytest, e.g. `scripts/check.sh -m slow` or `scripts/check.sh -k ledger`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin
echo "== ruff"
"$PY/ruff" check .
"$PY/ruff" format --check .
echo "== mypy"
"$PY/mypy" flwr_semcom strategies simulations benchmarks
echo "== pytest"
set +e
"$PY/pytest" -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
