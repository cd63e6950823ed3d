#!/usr/bin/env bash
# Generate a private CA and a TLS server certificate for a Flower SuperLink.
#
#   deploy/gen_certs.sh [--force] [--days N] OUTDIR [HOSTNAME|IP ...]
#
# Writes OUTDIR/ca.key, OUTDIR/ca.crt (the CA; copy ca.crt to every edge box and to the
# machine that runs `semcom-run`), OUTDIR/server.key and OUTDIR/server.pem (the SuperLink's
# key and certificate, signed by the CA). The server certificate's subjectAltName always holds
# DNS:localhost and IP:127.0.0.1, plus every HOSTNAME or IP given: list every name or address
# the SuperNodes use to reach the SuperLink.
#
# Idempotent: run again with the same names and it only checks the existing files. It never
# overwrites a key unless --force is given; --force replaces the server key and certificate
# and keeps an existing CA (so edge boxes keep their ca.crt). To replace the CA as well,
# delete OUTDIR/ca.key and OUTDIR/ca.crt first.
set -euo pipefail

prog="gen_certs.sh"
die() {
  echo "$prog: error: $*" >&2
  exit 1
}

force=0
days=365
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --days)
      [ $# -ge 2 ] || die "--days needs a number of days"
      days="$2"
      shift
      ;;
    -h | --help)
      sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*) die "unknown option $1 (valid: --force, --days N)" ;;
    *) args+=("$1") ;;
  esac
  shift
done
[ "${#args[@]}" -ge 1 ] || die "usage: $prog [--force] [--days N] OUTDIR [HOSTNAME|IP ...]"
[[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer, got '$days'"
command -v openssl >/dev/null || die "openssl not found on PATH"

out="${args[0]}"
names=("${args[@]:1}")

# subjectAltName entries: localhost and 127.0.0.1 always, then the given names (deduplicated).
is_ip() {
  [[ "$1" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || [[ "$1" == *:* ]]
}
san_list=("DNS:localhost" "IP:127.0.0.1")
for n in "${names[@]}"; do
  [[ "$n" =~ ^[A-Za-z0-9._:*-]+$ ]] || die "invalid hostname or IP '$n'"
  if is_ip "$n"; then entry="IP:$n"; else entry="DNS:$n"; fi
  dup=0
  for e in "${san_list[@]}"; do [ "$e" = "$entry" ] && dup=1; done
  [ "$dup" -eq 1 ] || san_list+=("$entry")
done
san="$(IFS=,; echo "${san_list[*]}")"

# The SAN of an existing certificate in the same "DNS:x,IP:y" form, sorted.
normalise() { tr ',' '\n' | sed -e 's/^ *//' -e 's/^IP Address:/IP:/' | grep -v '^$' | sort; }
existing_san() {
  openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | normalise
}

mkdir -p "$out"
umask 077

ca_key="$out/ca.key"
ca_crt="$out/ca.crt"
srv_key="$out/server.key"
srv_crt="$out/server.pem"

# 1. The CA: reuse it when both files exist; never overwrite a CA key.
if [ -e "$ca_key" ] && [ -e "$ca_crt" ]; then
  openssl x509 -in "$ca_crt" -noout >/dev/null 2>&1 || die "$ca_crt is not a certificate"
  ca_new=0
elif [ -e "$ca_key" ] || [ -e "$ca_crt" ]; then
  die "only one of $ca_key and $ca_crt exists; delete it or restore the other"
else
  ca_new=1
fi

# 2. Nothing to do when the server certificate exists, is signed by this CA and has this SAN.
if [ "$ca_new" -eq 0 ] && [ -e "$srv_key" ] && [ -e "$srv_crt" ] && [ "$force" -eq 0 ]; then
  want="$(echo "$san" | normalise)"
  have="$(existing_san "$srv_crt")"
  if [ "$want" = "$have" ] && openssl verify -CAfile "$ca_crt" "$srv_crt" >/dev/null 2>&1; then
    echo "$prog: $out already holds a CA and a server certificate for $san; nothing to do"
    exit 0
  fi
  die "$srv_key exists (certificate SAN: $(echo "$have" | paste -sd, -)); pass --force to replace the server key and certificate"
fi
if [ "$force" -eq 0 ] && { [ -e "$srv_key" ] || [ -e "$srv_crt" ]; }; then
  die "$srv_key or $srv_crt exists; pass --force to replace the server key and certificate"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ "$ca_new" -eq 1 ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$tmp/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$tmp/ca.key" -sha384 -days "$((days * 10))" \
    -subj "/O=flwr-semcom/CN=flwr-semcom deployment CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$tmp/ca.crt"
  mv "$tmp/ca.key" "$ca_key"
  mv "$tmp/ca.crt" "$ca_crt"
  chmod 600 "$ca_key"
  chmod 644 "$ca_crt"
fi

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$tmp/server.key" 2>/dev/null
openssl req -new -key "$tmp/server.key" -subj "/O=flwr-semcom/CN=flwr-semcom SuperLink" \
  -out "$tmp/server.csr"
cat >"$tmp/ext.cnf" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
EOF
openssl x509 -req -in "$tmp/server.csr" -CA "$ca_crt" -CAkey "$ca_key" -CAcreateserial \
  -CAserial "$tmp/ca.srl" -days "$days" -sha384 -extfile "$tmp/ext.cnf" \
  -out "$tmp/server.pem" 2>/dev/null
openssl verify -CAfile "$ca_crt" "$tmp/server.pem" >/dev/null || die "the new certificate does not verify"
mv "$tmp/server.key" "$srv_key"
mv "$tmp/server.pem" "$srv_crt"
chmod 600 "$srv_key"
chmod 644 "$srv_crt"

echo "$prog: wrote $srv_key and $srv_crt (SAN $san, $days days)$([ "$ca_new" -eq 1 ] && echo "; new CA $ca_crt" || echo "; signed by existing CA $ca_crt")"
