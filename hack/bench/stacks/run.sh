#!/usr/bin/env bash
# Stack benchmark against a real dockerd on a private socket (127.0.0.1 only, temp dir):
#  1. deploy N (default 20) one-service stacks (busybox httpd, network_mode host) with a
#     sequential `docker compose -p sN up -d --wait` loop: the baseline;
#  2. the same compose files as N Stacks through `phoenixctl apply -f DIR` to `phoenix serve`,
#     timed until every Stack is Ready;
#  3. steady state: Engine API requests (`phoenix_stack_engine_requests_total`) and Stack
#     reconciles over a window of resyncs, i.e. requests per resync per host (target: 1,
#     whatever N is).
# Prints the ratio baseline / Phoenix. Needs dockerd, docker, busybox-static and compose v2
# in .venv-compose (hack/install-deps.sh). Uses the debug binaries (cargo build -p phoenix
# -p phoenixctl): the time goes to compose and dockerd, not to Phoenix's own code.
#   N=20 WINDOW=20 hack/bench/stacks/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
N="${N:-20}"
WINDOW="${WINDOW:-20}"   # seconds of steady state
RESYNC=2                 # --stack-resync, seconds
ROOT="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
COMPOSE="$ROOT/.venv-compose/cli-plugins/docker-compose"
for p in dockerd docker busybox jq curl; do
  command -v "$p" >/dev/null || { echo "$p not found: hack/install-deps.sh installs it" >&2; exit 1; }
done
[ -x "$COMPOSE" ] || { echo "$COMPOSE not found: hack/install-deps.sh installs compose v2" >&2; exit 1; }
cargo build --quiet -p phoenix -p phoenixctl
PHOENIX="$CARGO_TARGET_DIR/debug/phoenix"
CTL="$CARGO_TARGET_DIR/debug/phoenixctl"

T="$(mktemp -d /tmp/phoenix-stack-bench.XXXXXX)"
SOCK="unix://$T/docker.sock"
D() { docker -H "$SOCK" "$@"; }
DOCKERD_PID=""; PHOENIX_PID=""
cleanup() {
  set +e
  [ -n "$PHOENIX_PID" ] && kill "$PHOENIX_PID" 2>/dev/null && wait "$PHOENIX_PID" 2>/dev/null
  if [ -n "$DOCKERD_PID" ]; then
    ids="$(D ps -aq 2>/dev/null)"; [ -n "$ids" ] && D rm -f $ids >/dev/null 2>&1
    kill "$DOCKERD_PID" 2>/dev/null; wait "$DOCKERD_PID" 2>/dev/null
  fi
  umount "$T/exec/netns/default" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
wait_until() { # TIMEOUT CMD...: poll CMD until it succeeds
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out: $*" >&2; return 1; }
    sleep 0.1
  done
}

dockerd --host "$SOCK" --data-root "$T/docker" --exec-root "$T/exec" --pidfile "$T/dockerd.pid" \
  --iptables=false --ip-masq=false --bridge=none --storage-driver=overlay2 >"$T/dockerd.log" 2>&1 &
DOCKERD_PID=$!
wait_until 60 D version >/dev/null 2>&1

# The test image: busybox-static with its applets and /www/index.html.
mkdir -p "$T/rootfs/bin" "$T/rootfs/www"
cp "$(command -v busybox)" "$T/rootfs/bin/busybox"
for a in $("$T/rootfs/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$T/rootfs/bin/$a"; done
echo phoenix >"$T/rootfs/www/index.html"
tar -C "$T/rootfs" -cf "$T/rootfs.tar" .
D import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' "$T/rootfs.tar" phoenix-test/busybox:1 >/dev/null

ports=($(python3 -c "
import socket
ss=[socket.socket() for _ in range($N)]
for s in ss: s.bind(('127.0.0.1',0))
print(' '.join(str(s.getsockname()[1]) for s in ss))"))
mkdir -p "$T/compose" "$T/manifests"
for i in $(seq 0 $((N - 1))); do
  cat >"$T/compose/s$i.yaml" <<YAML
services:
  web:
    image: phoenix-test/busybox:1
    network_mode: host
    restart: unless-stopped
    command: [httpd, -f, -p, "127.0.0.1:${ports[$i]}", -h, /www]
YAML
  {
    printf 'apiVersion: phoenix.thinkheads.ai/v1alpha1\nkind: Stack\nmetadata: {name: s%d}\n' "$i"
    printf 'spec:\n  target: {docker: {endpoint: "%s"}}\n  compose: |\n' "$SOCK"
    sed 's/^/    /' "$T/compose/s$i.yaml"
  } >"$T/manifests/s$i.yaml"
done

echo "== baseline: sequential docker compose up -d --wait, $N stacks"
t0=$(now)
for i in $(seq 0 $((N - 1))); do
  env -i PATH="$PATH" HOME="$T" DOCKER_HOST="$SOCK" "$COMPOSE" -p "s$i" -f "$T/compose/s$i.yaml" up -d --wait >/dev/null 2>&1
done
t1=$(now)
base=$(echo "$t1 - $t0" | bc -l)
curl -fsS "http://127.0.0.1:${ports[0]}/" | grep -q phoenix
for i in $(seq 0 $((N - 1))); do
  env -i PATH="$PATH" HOME="$T" DOCKER_HOST="$SOCK" "$COMPOSE" -p "s$i" -f "$T/compose/s$i.yaml" down >/dev/null 2>&1
done
[ -z "$(D ps -aq)" ] || { echo "baseline containers left" >&2; exit 1; }

echo "== Phoenix: phoenixctl apply -f DIR ($N Stacks), until all Ready"
mkdir -p "$T/phx/home"
HOME="$T/phx/home" "$PHOENIX" serve --data-dir "$T/phx" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --stack-compose-binary "$COMPOSE" --stack-resync "${RESYNC}s" --stack-list-max-age 1s \
  >"$T/phoenix.log" 2>&1 &
PHOENIX_PID=$!
wait_until 30 test -s "$T/phx/http.addr"
HTTP="$(cat "$T/phx/http.addr")"
CTLC=("$CTL" --config "$T/phx/admin.yaml")
ready_count() { "${CTLC[@]}" get stacks -o json | jq '[.items[]? // .[]? | select(any(.status.conditions[]?; .type=="Ready" and .status=="True"))] | length'; }
all_ready() { [ "$(ready_count)" = "$N" ]; }
t0=$(now)
"${CTLC[@]}" apply -f "$T/manifests" >/dev/null
wait_until 300 all_ready
t1=$(now)
phx=$(echo "$t1 - $t0" | bc -l)
curl -fsS "http://127.0.0.1:${ports[0]}/" | grep -q phoenix
[ "$(D ps -q | wc -l)" = "$N" ] || { echo "expected $N running containers" >&2; exit 1; }

metric() { curl -fsS "http://$HTTP/metrics" | awk -v m="$1" -v f="$2" '$1 ~ "^"m"[{]" && $1 ~ f {s += $2} END {print s + 0}'; }
echo "== steady state: ${WINDOW}s, resync ${RESYNC}s"
sleep 3   # let the deploy's own reconciles finish
c0=$(metric phoenix_stack_engine_requests_total "")
r0=$(metric controller_runtime_reconcile_total 'controller="stack"')
sleep "$WINDOW"
c1=$(metric phoenix_stack_engine_requests_total "")
r1=$(metric controller_runtime_reconcile_total 'controller="stack"')
calls=$((c1 - c0)); recs=$((r1 - r0))
resyncs=$(echo "$WINDOW / $RESYNC" | bc -l)

printf '\nstacks: %d, one Docker host\n' "$N"
printf 'deploy, sequential compose up --wait: %.2fs\n' "$base"
printf 'deploy, Phoenix (apply -> all Ready): %.2fs\n' "$phx"
printf 'ratio baseline / Phoenix:               %.2fx (target >= 2x)\n' "$(echo "$base / $phx" | bc -l)"
printf 'steady state: %d Engine API requests and %d Stack reconciles in %ds (%.0f resyncs)\n' "$calls" "$recs" "$WINDOW" "$resyncs"
printf 'Engine API requests per resync per host: %.2f (target 1)\n' "$(echo "$calls / $resyncs" | bc -l)"
