#!/usr/bin/env bash
# DNS benchmark: N names written into a zone on a real BIND 9 (loopback, a port picked here)
# by phoenix-dns as the DnsZone controller writes them (TSIG-signed AXFR, plan, one signed
# update per name over TCP), against nsupdate -v doing the same in the same run; plus the
# no-op reconcile (transfer + plan) and the delete. Needs named and nsupdate (bind9,
# bind9-dnsutils: hack/install-deps.sh). Extra arguments go to the benchmark, e.g.
#   hack/bench/dnszone/run.sh --names 500 --reps 3
set -euo pipefail
cd "$(dirname "$0")/../../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet -p phoenix-dns --bin dns-bench

T=$(mktemp -d)
SECRET=$(head -c 32 /dev/urandom | base64)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
{
  echo "key \"phoenix-key\" { algorithm hmac-sha256; secret \"$SECRET\"; };"
  echo "options { directory \"$T\"; listen-on port $PORT { 127.0.0.1; }; listen-on-v6 { none; };"
  echo "  pid-file \"$T/named.pid\"; recursion no; dnssec-validation no; notify no; };"
  echo "controls { };"
  for z in phoenix.bench nsupdate.bench; do
    printf '$TTL 300\n@ IN SOA ns.%s. admin.%s. 1 3600 600 86400 300\n@ IN NS ns.%s.\nns IN A 127.0.0.1\n' \
      "$z" "$z" "$z" > "$T/$z.db"
    echo "zone \"$z\" { type primary; file \"$T/$z.db\"; allow-update { key phoenix-key; }; allow-transfer { key phoenix-key; }; };"
  done
} > "$T/named.conf"

# named and the benchmark in one process group, killed on exit, failure or interrupt.
exec hack/bench/in-group.sh bash -c '
  /usr/sbin/named -g -u root -c "$1/named.conf" > "$1/named.log" 2>&1 &
  for _ in $(seq 100); do
    dig @127.0.0.1 -p "$2" +short phoenix.bench SOA | grep -q . && break
    sleep 0.1
  done
  "$4" --server "127.0.0.1:$2" --secret "$3" "${@:5}"
  status=$?
  rm -rf "$1"
  exit $status
' bench "$T" "$PORT" "$SECRET" "$CARGO_TARGET_DIR/release/dns-bench" "$@"
