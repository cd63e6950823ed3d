#!/usr/bin/env bash
# Create a SuperNode authentication key pair (EC P-384, OpenSSH format, no passphrase).
#
#   deploy/supernode_key.sh [--force] OUTDIR NAME
#
# Writes OUTDIR/NAME (private key: stays on the edge box, passed to deploy/supernode.sh --key)
# and OUTDIR/NAME.pub (public key: registered on the SuperLink with
# deploy/register_supernode.sh). Flower 1.41 accepts EC keys on NIST curves in OpenSSH format
# (`ssh-keygen -t ecdsa -b 384`). An existing key is never overwritten without --force.
set -euo pipefail

prog="supernode_key.sh"
die() {
  echo "$prog: error: $*" >&2
  exit 1
}

force=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    -h | --help)
      sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*) die "unknown option $1 (valid: --force)" ;;
    *) args+=("$1") ;;
  esac
  shift
done
[ "${#args[@]}" -eq 2 ] || die "usage: $prog [--force] OUTDIR NAME"
out="${args[0]}"
name="${args[1]}"
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "NAME may hold only letters, digits, '.', '_' and '-', got '$name'"
command -v ssh-keygen >/dev/null || die "ssh-keygen not found on PATH (package openssh-client)"

key="$out/$name"
if [ -e "$key" ] || [ -e "$key.pub" ]; then
  [ "$force" -eq 1 ] || die "$key exists; pass --force to replace it (then register the new public key)"
  rm -f "$key" "$key.pub"
fi
mkdir -p "$out"
ssh-keygen -q -t ecdsa -b 384 -N "" -C "flwr-semcom-$name" -f "$key"
chmod 600 "$key"
echo "$prog: wrote $key (private, keep on the edge box) and $key.pub (register on the SuperLink)"
