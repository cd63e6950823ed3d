# Sourced by the deploy scripts (superlink.sh, supernode.sh, register_supernode.sh) right after
# they set $prog and $here: error exits, the checks they share, and finding Flower executables.
#   die MESSAGE          prints "$prog: error: MESSAGE" (one line) to stderr and exits 1
#   check_port VALUE     dies unless VALUE is a port number in [1, 65535] (the --port option)
#   check_superlink VALUE
#                        dies unless VALUE is a HOST:PORT (the --superlink option, required)
#   find_flwr_bin NAME   sets $found to its path (returns 1 if none) and puts its folder first
#                        on PATH: Flower starts its helpers (flower-superexec, flwr-serverapp,
#                        flwr-clientapp) by name, and they must come from the same venv.
#                        Order: $SEMCOM_VENV/bin, the project's .venv/bin, then PATH.
die() {
  echo "$prog: error: $*" >&2
  exit 1
}

check_port() {
  [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ] ||
    die "--port must be a port number in [1, 65535], got '$1'"
}

check_superlink() {
  [ -n "$1" ] || die "--superlink HOST:PORT is required"
  [[ "$1" =~ ^.+:[0-9]+$ ]] || die "--superlink must be HOST:PORT, got '$1'"
}

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
