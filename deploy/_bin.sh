# Sourced by the deploy scripts: find a Flower executable.
#   find_flwr_bin NAME   sets $found to its path (returns 1 if none) and puts its folder first
#                        on PATH: Flower starts its helpers (flower-superexec, flwr-serverapp,
#                        flwr-clientapp) by name, and they must come from the same venv.
# Order: $SEMCOM_VENV/bin, the project's .venv/bin, then PATH.
find_flwr_bin() {
  local name="$1" dir
  found=""
  for dir in "${SEMCOM_VENV:+$SEMCOM_VENV/bin}" \
    "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin"; do
    if [ -n "$dir" ] && [ -x "$dir/$name" ]; then
      found="$dir/$name"
      export PATH="$dir:$PATH"
      return 0
    fi
  done
  found="$(command -v "$name")" || return 1
}
