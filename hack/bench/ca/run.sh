#!/usr/bin/env bash
# CertificateAuthority benchmark (issue 14): N certificates (default 100) from one Pebble on
# 127.0.0.1 (PEBBLE_VA_ALWAYS_VALID=1, PEBBLE_VA_NOSLEEP=1, no nonce rejection), issued
#   1. by `phoenix serve` (one CertificateAuthority with N requests; time from apply to
#      Ready=True), and
#   2. in the same run by Debian's `lego`, one certificate after the other (the sequential
#      baseline a shell script would use),
# then the steady state: with nothing due, the ACME requests Phoenix sends in STEADY seconds
# (must be 0). Prints both wall times and their ratio. Ports are picked at run time;
# everything started runs in this script's process group and is killed on exit.
#   N=100 STEADY=20 hack/bench/ca/run.sh
# PROFILE=release builds phoenix optimised (default: the debug build; issuance is bound by
# Pebble and the network round trips, not by Phoenix's CPU).
set -euo pipefail
cd "$(dirname "$0")/../../.."
for b in pebble pebble-challtestsrv lego openssl curl; do
  command -v "$b" >/dev/null || { echo "$b missing: install it with hack/install-deps.sh" >&2; exit 1; }
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
profile="${PROFILE:-dev}"
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build --profile "$profile" --quiet -p phoenix -p phoenixctl
phoenix="$CARGO_TARGET_DIR/$dir/phoenix"
ctl="$CARGO_TARGET_DIR/$dir/phoenixctl"
n="${N:-100}"
steady="${STEADY:-20}"

if [ -z "${PHOENIX_CA_BENCH_GROUP:-}" ]; then
  PHOENIX_CA_BENCH_GROUP=1 exec hack/bench/in-group.sh "$0" "$@"
fi

t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on $1" >&2; exit 1; }

# Pebble's TLS certificate, signed by a throwaway CA.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$t/key.pem" -out "$t/req.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$t/ext"
openssl x509 -req -in "$t/req.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial -days 2 \
  -extfile "$t/ext" -out "$t/cert.pem" 2>/dev/null

acme=$(port); mgmt=$(port); http=$(port); tls=$(port); dns=$(port); dnsm=$(port); responder=$(port)
pebble-challtestsrv -dns01 "127.0.0.1:$dns" -http01 "" -https01 "" -tlsalpn01 "" \
  -management "127.0.0.1:$dnsm" -defaultIPv6 "" >/dev/null 2>&1 &
cat > "$t/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$acme", "managementListenAddress": "127.0.0.1:$mgmt",
 "certificate": "$t/cert.pem", "privateKey": "$t/key.pem", "httpPort": $http, "tlsPort": $tls,
 "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON
PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
  pebble -config "$t/pebble.json" -dnsserver "127.0.0.1:$dns" >"$t/pebble.log" 2>&1 &
wait_port "$acme"
directory="https://127.0.0.1:$acme/dir"

# 1. Phoenix.
mkdir -p "$t/data" "$t/home"
HOME="$t/home" "$phoenix" serve --data-dir "$t/data" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  >"$t/phoenix.log" 2>&1 &
for _ in $(seq 400); do [ -s "$t/data/http.addr" ] && break; sleep 0.05; done
metrics="http://$(cat "$t/data/http.addr")/metrics"
{
  printf 'apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: CertificateAuthority\nmetadata: {name: bench}\nspec:\n'
  printf '  acme:\n    directoryUrl: %s\n    caBundle: |\n' "$directory"
  sed 's/^/      /' "$t/ca.pem"
  # Its own port: the responder keeps listening, and lego binds the challenge port each run.
  printf '  challenge: {http01: {listen: 127.0.0.1:%s}}\n  certificates:\n' "$responder"
  for i in $(seq "$n"); do printf '    - {name: c%s, dnsNames: [c%s.bench.test]}\n' "$i" "$i"; done
} > "$t/ca.yaml"
start=$(date +%s.%N)
HOME="$t/home" "$ctl" --config "$t/data/admin.yaml" apply -f "$t/ca.yaml" >/dev/null
HOME="$t/home" "$ctl" --config "$t/data/admin.yaml" wait --for=condition=Ready --timeout 10m \
  certificateauthority bench >/dev/null
phoenix_s=$(echo "$(date +%s.%N) - $start" | bc -l)
issued=$(HOME="$t/home" "$ctl" --config "$t/data/admin.yaml" get certificateauthority bench -o json \
  | python3 -c 'import json,sys; print(sum(1 for c in json.load(sys.stdin)["status"]["certificates"] if c.get("serial")))')

requests() { curl -sf "$metrics" | awk '/^phoenix_ca_acme_client_requests_total/ {s += $NF} END {print s+0}'; }
before=$(requests)
sleep "$steady"
after=$(requests)

# 2. lego, one certificate after the other.
start=$(date +%s.%N)
for i in $(seq "$n"); do
  LEGO_CA_CERTIFICATES="$t/ca.pem" lego --accept-tos --server "$directory" --path "$t/lego" \
    --email bench@phoenix.test --http --http.port "127.0.0.1:$http" -d "c$i.bench.test" run \
    >>"$t/lego.log" 2>&1 || { tail -5 "$t/lego.log" >&2; exit 1; }
done
lego_s=$(echo "$(date +%s.%N) - $start" | bc -l)
lego_issued=$(ls "$t/lego/certificates/"*.crt 2>/dev/null | grep -vc issuer || true)

printf 'certificates:           %s\n' "$n"
printf 'phoenix (%s build):     %.2f s for %s issued (%.1f certificates/s)\n' "$profile" "$phoenix_s" "$issued" "$(echo "$issued / $phoenix_s" | bc -l)"
printf 'lego, sequential:       %.2f s for %s issued (%.1f certificates/s)\n' "$lego_s" "$lego_issued" "$(echo "$lego_issued / $lego_s" | bc -l)"
printf 'ratio lego / phoenix:   %.1fx (target >= 5x)\n' "$(echo "$lego_s / $phoenix_s" | bc -l)"
printf 'ACME requests with nothing due in %ss: %s\n' "$steady" "$((after - before))"
[ "$issued" = "$n" ] || { echo "phoenix issued $issued of $n" >&2; exit 1; }
[ "$((after - before))" = 0 ] || { echo "requests with nothing due" >&2; exit 1; }
