#!/usr/bin/env bash
# Start a Flower SuperLink for flwr-semcom (TLS, SuperNode authentication, no runtime installs).
#
#   deploy/superlink.sh --certs DIR [--host 0.0.0.0] [--port 9091] [--database FILE]
#                       [--no-auth] [--insecure] [-- EXTRA flower-superlink ARGS]
#
#   --certs DIR     folder written by deploy/gen_certs.sh (ca.crt, server.pem, server.key)
#   --host/--port   where the one HTTPS port (Fleet, Control and Runtime APIs) listens
#                   (default 127.0.0.1:9091; use 0.0.0.0 or the LAN address for real edge boxes)
#   --database FILE SQLite state (runs, registered SuperNodes); default ./superlink.db.
#                   It survives restarts; it grows with the message payloads.
#   --no-auth       accept any SuperNode (default: only keys registered with
#                   `flwr supernode register`, i.e. --enable-supernode-auth)
#   --insecure      plain HTTP, no certificates (loopback experiments only)
#
# The process is exec'ed, so its PID is the SuperLink's; stop it with `kill -TERM <pid>` (its
# flower-superexec child exits with it). Start it from a directory that holds no Python code:
# the ServerApp runs with the SuperLink's working directory (../shared/FLOWER_NOTES.md §2.6).
set -euo pipefail

prog="superlink.sh"
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/_bin.sh
. "$here/_bin.sh"

certs=""
host="127.0.0.1"
port="9091"
database="superlink.db"
auth=1
insecure=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --certs | --host | --port | --database)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --certs) certs="$2" ;;
        --host) host="$2" ;;
        --port) port="$2" ;;
        --database) database="$2" ;;
      esac
      shift
      ;;
    --no-auth) auth=0 ;;
    --insecure) insecure=1 ;;
    --)
      shift
      extra=("$@")
      break
      ;;
    -h | --help)
      sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
check_port "$port"

find_flwr_bin flower-superlink ||
  die "flower-superlink not found; install the project, set SEMCOM_VENV, or put its venv on PATH"

tls=()
if [ "$insecure" -eq 1 ]; then
  tls=(--insecure)
else
  [ -n "$certs" ] || die "--certs DIR is required (create it with deploy/gen_certs.sh), or pass --insecure"
  for f in ca.crt server.pem server.key; do
    [ -r "$certs/$f" ] || die "$certs/$f missing or unreadable; create it with deploy/gen_certs.sh"
  done
  tls=(--ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.pem" --ssl-keyfile "$certs/server.key")
fi
auth_args=()
if [ "$auth" -eq 1 ]; then
  [ "$insecure" -eq 0 ] || die "SuperNode authentication needs TLS; pass --no-auth with --insecure"
  auth_args=(--enable-supernode-auth)
fi

# Runtime dependency installation would `uv sync` the app's dependencies (a second torch) into
# a per-run venv: off, both by flag and by environment (read by the SuperLink at start-up).
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export PYTHONUNBUFFERED=1

exec "$found" "${tls[@]}" "${auth_args[@]}" \
  --disable-runtime-dependency-installation \
  --host "$host" --port "$port" --database "$database" "${extra[@]}"
