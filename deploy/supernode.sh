#!/usr/bin/env bash
# Start a Flower SuperNode on an edge box for flwr-semcom.
#
#   deploy/supernode.sh --superlink HOST:PORT --ca CA_CERT --key PRIVATE_KEY
#                       --partition-id K --num-partitions N [--port 9094]
#                       [--node-config "key=value ..."] [--task-poll-interval SECONDS]
#                       [--worker DIR [--worker-log FILE] [--worker-threads N] [--no-launcher]]
#                       [--flower-polls] [--insecure] [-- EXTRA flower-supernode ARGS]
#
#   --superlink        the SuperLink's address as the box reaches it (a name or IP in the
#                      server certificate's subjectAltName, see deploy/gen_certs.sh)
#   --ca               the CA certificate (ca.crt from deploy/gen_certs.sh)
#   --key              this box's private key (deploy/supernode_key.sh); its public key must be
#                      registered on the SuperLink first (deploy/register_supernode.sh)
#   --partition-id K, --num-partitions N
#                      which device this box is: the ClientApp reads them from its node config
#                      (`context.node_config`), exactly as a simulated node gets them, and
#                      derives its modality / data partition from K
#   --port             the SuperNode's local Runtime API port; distinct per SuperNode on a host
#   --node-config      further node config entries, TOML-typed ("data-root=\"/data\"")
#   --task-poll-interval
#                      how often the local flower-superexec asks for a new ClientApp task
#                      (FLWR_SUPEREXEC_TASK_POLL_INTERVAL, Flower's default 1.0 s; see
#                      docs/deployment.md for measured effects)
#   --worker DIR       first start `semcom-worker` (warm client: models, data and optimiser
#                      state stay in memory across messages), listening on the Unix socket
#                      DIR/worker.sock (DIR created mode 0700; socket 0600; no network port),
#                      wait until it listens, then start the SuperNode with node config
#                      worker-socket=DIR/worker.sock and a random worker-session: every
#                      ClientApp process relays its message to this worker and imports no
#                      torch. The worker exits with the SuperNode (it watches its PID).
#                      With it, `flwr-clientapp` itself starts in milliseconds: a fork server
#                      (deploy/clientapp_launcher.py, DIR/launcher.sock) holds Flower's
#                      ClientApp code imported and forks a process per message;
#                      DIR/bin/flwr-clientapp (deploy/flwr_clientapp_shim.py) goes first on
#                      the SuperNode's PATH and hands each launch to it (--no-launcher: off).
#   --worker-log FILE  the worker's log (default DIR/worker.log)
#   --worker-threads N torch threads of the worker (default: torch's)
#   --flower-polls     keep Flower's fixed SuperNode sleeps (3 s when the SuperLink has no
#                      message, 0.5 s reply poll). Default: the SuperNode runs as
#                      `python -m flwr_semcom.runtime.fastnode` (Flower's flower-supernode with
#                      an adaptive 0.1-3 s idle poll and a 20 ms reply poll; same arguments,
#                      TLS and authentication). SEMCOM_SUPERNODE_POLLS=flower does the same.
#   --insecure         plain HTTP to a SuperLink started with --insecure (loopback tests only)
#
# The process is exec'ed, so its PID is the SuperNode's; stop it with `kill -TERM <pid>`.
# Runtime dependency installation stays off (Flower's SuperNode default): the box runs the
# flwr-semcom and torch it has installed.
set -euo pipefail

prog="supernode.sh"
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/_bin.sh
. "$here/_bin.sh"

superlink=""
ca=""
key=""
pid_=""
nparts=""
port="9094"
node_config=""
poll=""
worker_dir=""
worker_log=""
worker_threads=0
launcher=1
insecure=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --superlink | --ca | --key | --partition-id | --num-partitions | --port | --node-config | \
      --task-poll-interval | --worker | --worker-log | --worker-threads)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --superlink) superlink="$2" ;;
        --ca) ca="$2" ;;
        --key) key="$2" ;;
        --partition-id) pid_="$2" ;;
        --num-partitions) nparts="$2" ;;
        --port) port="$2" ;;
        --node-config) node_config="$2" ;;
        --task-poll-interval) poll="$2" ;;
        --worker) worker_dir="$2" ;;
        --worker-log) worker_log="$2" ;;
        --worker-threads) worker_threads="$2" ;;
      esac
      shift
      ;;
    --insecure) insecure=1 ;;
    --flower-polls) export SEMCOM_SUPERNODE_POLLS=flower ;;
    --no-launcher) launcher=0 ;;
    --)
      shift
      extra=("$@")
      break
      ;;
    -h | --help)
      sed -n '2,48p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done

check_superlink "$superlink"
[[ "$nparts" =~ ^[1-9][0-9]*$ ]] || die "--num-partitions must be an integer >= 1, got '$nparts'"
[[ "$pid_" =~ ^[0-9]+$ ]] && [ "$pid_" -lt "$nparts" ] ||
  die "--partition-id must be an integer in [0, $((nparts - 1))], got '$pid_'"
check_port "$port"
if [ -n "$poll" ]; then
  python3 -c "import math,sys; v=float(sys.argv[1]); sys.exit(0 if math.isfinite(v) and 0.01 <= v <= 60 else 1)" \
    "$poll" 2>/dev/null || die "--task-poll-interval must be a number of seconds in [0.01, 60], got '$poll'"
  export FLWR_SUPEREXEC_TASK_POLL_INTERVAL="$poll"
fi

conn=()
if [ "$insecure" -eq 1 ]; then
  conn=(--insecure)
  [ -z "$key" ] || conn+=(--auth-supernode-private-key "$key")
else
  [ -n "$ca" ] || die "--ca CA_CERT is required (ca.crt from deploy/gen_certs.sh), or pass --insecure"
  [ -r "$ca" ] || die "CA certificate '$ca' missing or unreadable"
  conn=(--root-certificates "$ca")
  if [ -n "$key" ]; then
    [ -r "$key" ] || die "private key '$key' missing or unreadable (create it with deploy/supernode_key.sh)"
    conn+=(--auth-supernode-private-key "$key")
  fi
fi

find_flwr_bin flower-supernode ||
  die "flower-supernode not found; install the project, set SEMCOM_VENV, or put its venv on PATH"

export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export PYTHONUNBUFFERED=1

if [ -n "$worker_dir" ]; then
  [[ "$worker_threads" =~ ^[0-9]+$ ]] || die "--worker-threads must be an integer >= 0, got '$worker_threads'"
  old_umask="$(umask)"
  umask 077 # the worker's folder, socket and log: this user only
  mkdir -p "$worker_dir" && chmod 700 "$worker_dir" || die "cannot create worker directory '$worker_dir'"
  worker_dir="$(cd "$worker_dir" && pwd)"
  sock="$worker_dir/worker.sock"
  [[ "$sock" =~ ^[A-Za-z0-9_./+-]+$ ]] || die "--worker path may hold only letters, digits and _./+-, got '$sock'"
  [ "${#sock}" -le 100 ] || die "--worker path too long for a Unix socket (${#sock} > 100 bytes): '$sock'"
  worker_log="${worker_log:-$worker_dir/worker.log}"
  py="$(dirname "$found")/python"
  [ -x "$py" ] || die "no python next to $found to run semcom-worker"
  session="$("$py" -c 'import secrets; print(secrets.token_hex(8))')"
  # $$ is this script's PID, which `exec` below hands to flower-supernode: the worker exits
  # when the SuperNode is gone (and is its child, so whoever stops the SuperNode's process
  # tree stops it too)
  "$py" -m flwr_semcom.runtime.worker --socket "$sock" --owner-pid $$ --session "$session" \
    --threads "$worker_threads" >>"$worker_log" 2>&1 </dev/null &
  worker_pid=$!
  for _ in $(seq 1200); do # up to 600 s: the worker imports torch and the ClientApp
    if [ -S "$sock" ] && grep -q "worker $worker_pid: serving" "$worker_log" 2>/dev/null; then
      break
    fi
    kill -0 "$worker_pid" 2>/dev/null ||
      die "semcom-worker exited at start: $(tail -n 1 "$worker_log" 2>/dev/null) (log $worker_log)"
    sleep 0.5
  done
  grep -q "worker $worker_pid: serving" "$worker_log" 2>/dev/null ||
    die "semcom-worker did not listen on $sock within 600 s (log $worker_log)"
  node_config="${node_config:+$node_config }worker-socket=\"$sock\" worker-session=\"$session\""
  echo "$prog: semcom-worker pid $worker_pid on $sock (session $session)" >&2
  if [ "$launcher" -eq 1 ]; then
    lsock="$worker_dir/launcher.sock"
    "$py" "$here/clientapp_launcher.py" --socket "$lsock" --owner-pid $$ \
      >>"$worker_dir/launcher.log" 2>&1 </dev/null &
    launcher_pid=$!
    for _ in $(seq 240); do
      grep -q "launcher $launcher_pid: serving" "$worker_dir/launcher.log" 2>/dev/null && break
      kill -0 "$launcher_pid" 2>/dev/null ||
        die "clientapp launcher exited at start: $(tail -n 1 "$worker_dir/launcher.log" 2>/dev/null)"
      sleep 0.25
    done
    grep -q "launcher $launcher_pid: serving" "$worker_dir/launcher.log" 2>/dev/null ||
      die "clientapp launcher did not listen on $lsock within 60 s"
    mkdir -p "$worker_dir/bin"
    { echo "#!$py -IS"; tail -n +2 "$here/flwr_clientapp_shim.py"; } >"$worker_dir/bin/flwr-clientapp"
    chmod 700 "$worker_dir/bin/flwr-clientapp"
    export SEMCOM_CLIENTAPP_LAUNCHER="$lsock" SEMCOM_FLWR_CLIENTAPP="$(dirname "$found")/flwr-clientapp"
    export PATH="$worker_dir/bin:$PATH"
    echo "$prog: clientapp launcher pid $launcher_pid on $lsock" >&2
  fi
  umask "$old_umask"
fi

supernode=("$found")
if [ "${SEMCOM_SUPERNODE_POLLS:-fast}" != "flower" ]; then
  py="$(dirname "$found")/python"
  [ -x "$py" ] || die "no python next to $found to run flwr_semcom.runtime.fastnode (or pass --flower-polls)"
  supernode=("$py" -m flwr_semcom.runtime.fastnode)
fi

exec "${supernode[@]}" "${conn[@]}" --superlink "$superlink" \
  --node-config "partition-id=$pid_ num-partitions=$nparts${node_config:+ $node_config}" \
  --port "$port" "${extra[@]}"
