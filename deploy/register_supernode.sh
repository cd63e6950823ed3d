#!/usr/bin/env bash
# Register a SuperNode's public key on a SuperLink started with SuperNode authentication,
# list the SuperNodes it knows, or unregister one (--insecure instead of --ca for a plain-HTTP link).
#
#   deploy/register_supernode.sh --superlink HOST:PORT --ca CA_CERT [--name NAME] PUBLIC_KEY
#   deploy/register_supernode.sh --superlink HOST:PORT --ca CA_CERT --list
#   deploy/register_supernode.sh --superlink HOST:PORT --ca CA_CERT --unregister NODE_ID
#
# Runs `flwr supernode register PUBLIC_KEY <connection>` (or `ls`, `unregister`) with a
# connection to HOST:PORT written into a throwaway FLWR_HOME, so your own
# ~/.flwr/config.toml is left alone. The SuperLink fixes the node id at registration and
# prints it; the SuperNode with the matching private key then connects as that node
# (status: registered -> online). An unregistered key is refused with
# "[code: 2004] Failed to activate SuperNode".
set -euo pipefail

prog="register_supernode.sh"
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/_bin.sh
. "$here/_bin.sh"

superlink=""
ca=""
name=""
list=0
unregister=""
insecure=0
pub=""
while [ $# -gt 0 ]; do
  case "$1" in
    --superlink | --ca | --name | --unregister)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --superlink) superlink="$2" ;;
        --ca) ca="$2" ;;
        --name) name="$2" ;;
        --unregister) unregister="$2" ;;
      esac
      shift
      ;;
    --list) list=1 ;;
    --insecure) insecure=1 ;;
    -h | --help)
      sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
      [ -z "$pub" ] || die "only one PUBLIC_KEY per call"
      pub="$1"
      ;;
  esac
  shift
done
check_superlink "$superlink"
if [ "$insecure" -eq 0 ]; then
  [ -n "$ca" ] || die "--ca CA_CERT is required (ca.crt from deploy/gen_certs.sh)"
  [ -r "$ca" ] || die "CA certificate '$ca' missing or unreadable"
  ca="$(cd "$(dirname "$ca")" && pwd)/$(basename "$ca")"
fi
if [ -n "$unregister" ]; then
  [[ "$unregister" =~ ^[0-9]+$ ]] || die "--unregister needs a numeric NODE_ID, got '$unregister'"
elif [ "$list" -eq 0 ]; then
  [ -n "$pub" ] || die "PUBLIC_KEY is required (NAME.pub from deploy/supernode_key.sh), or pass --list"
  [ -r "$pub" ] || die "public key '$pub' missing or unreadable"
fi

find_flwr_bin flwr || die "flwr not found; install the project, set SEMCOM_VENV, or put its venv on PATH"

home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
{
  echo '[superlink]'
  echo 'default = "link"'
  echo '[superlink.link]'
  echo "address = \"$superlink\""
  if [ "$insecure" -eq 1 ]; then echo 'insecure = true'; else echo "root-certificates = \"$ca\""; fi
} >"$home/config.toml"
export FLWR_HOME="$home" FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}" FLWR_DISABLE_UPDATE_CHECK=1

if [ -n "$unregister" ]; then
  "$found" supernode unregister "$unregister" link
elif [ "$list" -eq 1 ]; then
  "$found" supernode ls link
else
  "$found" supernode register "$pub" link ${name:+--name "$name"}
fi
