#!/usr/bin/env bash
# GitSync benchmark against real git (a bare repository on file://, written with the git CLI;
# no PVE needed: no Guest controller runs, the Guests are only stored):
#  1. baseline: `phoenixctl apply -f DIR` of N (default 1,000) Guest manifests, one file
#     each, into a fresh `phoenix serve --no-controllers`;
#  2. the same tree as a GitSync's first sync into another fresh server, with the gitsync
#     controller alone in `phoenix controller --only gitsync`: from `phoenixctl apply` of the
#     GitSync (and its webhook Secret) to a `phoenixctl wait --for condition=Ready` that was
#     already watching returning (fetch into an empty cache, decode, apply, status). Target:
#     <= 1.5x the baseline;
#  3. a no-change sync (the next interval): store writes on the server's /metrics
#     (create, create_many, update, delete) over a window holding at least one sync.
#     Target: 0;
#  4. commit-to-applied latency with the webhook: R (default 20) commits, each removing one
#     Guest (pruned), pushed then announced by a signed POST /hooks/gitsync/NAME; the time
#     from the push to `phoenixctl wait guest X --for=delete` returning. Target p99 <= 1 s;
#  5. the same with the interval alone (INTERVAL, default 5s; RI commits, default 5).
#     Target: <= interval + 1 s.
# Steps 1 and 2 run REPS times (default 3), alternating; medians.
# PROFILE=release builds optimised (default: debug, as the tests use).
#   N=1000 R=20 RI=5 INTERVAL=5 hack/bench/gitsync/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
N="${N:-1000}"
R="${R:-20}"
RI="${RI:-5}"
INTERVAL="${INTERVAL:-5}"
REPS="${REPS:-3}"
PROFILE="${PROFILE:-debug}"
ROOT="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
for p in git jq curl openssl python3; do
  command -v "$p" >/dev/null || { echo "$p not found: hack/install-deps.sh installs it" >&2; exit 1; }
done
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet -p phoenix -p phoenixctl
else
  cargo build --quiet -p phoenix -p phoenixctl
fi
PHOENIX="$CARGO_TARGET_DIR/$PROFILE/phoenix"
CTL="$CARGO_TARGET_DIR/$PROFILE/phoenixctl"

T="$(mktemp -d /tmp/phoenix-gitsync-bench.XXXXXX)"
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
[ -n "${KEEP_LOG:-}" ] && trap 'cp "$T/controller.log" "$KEEP_LOG"; cleanup' EXIT   # KEEP_LOG=FILE: keep the controller's log
trap 'exit 130' INT TERM

now() { date +%s.%N; }
wait_until() { # TIMEOUT CMD...: poll CMD until it succeeds
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out: $*" >&2; return 1; }
    sleep 0.05
  done
}
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }

# start_server DIR: phoenix serve --no-controllers on loopback; sets SERVER_PID, HTTP.
start_server() {
  local dir="$1"
  mkdir -p "$dir/home"
  HOME="$dir/home" "$PHOENIX" serve --no-controllers --data-dir "$dir" --listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 >"$dir.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_until 60 test -s "$dir/http.addr"
  HTTP="$(cat "$dir/http.addr")"
  wait_until 60 "$CTL" --config "$dir/admin.yaml" get guests -o name >/dev/null 2>&1
}
stop_server() { kill "$1"; wait "$1" 2>/dev/null || true; }
# Store writes of the server at $HTTP so far.
store_writes() {
  curl -fsS "http://$HTTP/metrics" | awk '/^phoenix_store_operation_duration_seconds_count\{operation="(create|create_many|update|delete)"\}/ {s += $2} END {print s + 0}'
}

# The repository: N Guests, one file each.
GUEST() {
  cat <<YAML
apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Guest
metadata:
  name: $1
spec:
  type: lxc
  source:
    template: local:vztmpl/debian-12-standard_12.2-1_amd64.tar.zst
  cores: 1
  memoryMiB: 512
  rootfs: {storage: local-lvm, sizeGiB: 4}
  networks:
    - {name: eth0, bridge: vmbr0, ipv4: dhcp}
YAML
}
G() { git -C "$T/work" -c user.name=bench -c user.email=bench@phoenix.test -c commit.gpgsign=false "$@"; }
git init -q --bare -b main "$T/estate.git"
git init -q -b main "$T/work"
mkdir -p "$T/work/guests"
for i in $(seq -f "%04g" 0 $((N - 1))); do GUEST "g$i" >"$T/work/guests/g$i.yaml"; done
G add -A && G commit -q -m "$N guests" && G push -q "$T/estate.git" HEAD:refs/heads/main
echo "repository: $N Guest manifests; $PROFILE build"

# 1 and 2, REPS times (alternating, each on fresh servers): the baseline `phoenixctl apply -f`,
# then the GitSync's first sync with the gitsync controller alone in `phoenix controller`.
KEY="bench-$(openssl rand -hex 16)"
cat >"$T/gitsync.yaml" <<YAML
apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: Secret
metadata: {name: hook}
type: Opaque
stringData: {token: $KEY}
---
apiVersion: phoenix.thinkheads.ai/v1alpha1
kind: GitSync
metadata: {name: bench}
spec:
  url: file://$T/estate.git
  ref: {branch: main}
  path: guests
  interval: ${INTERVAL}s
  timeout: 10m
  prune: true
  webhook: {secretRef: hook}
YAML
# start_controller: phoenix controller --only gitsync against the server of $CFG.
start_controller() {
  CTRL_HTTP="127.0.0.1:$(free_port)"
  RUST_LOG="${RUST_LOG:-info}" HOME="$T/home" "$PHOENIX" controller --only gitsync --config "$CFG" \
    --http-listen "$CTRL_HTTP" --leader-ttl 1h >>"$T/controller.log" 2>&1 &
  CTRL_PID=$!
  PIDS+=("$CTRL_PID")
  wait_until 60 curl -fsS "http://$CTRL_HTTP/healthz" -o /dev/null 2>/dev/null
}
mkdir -p "$T/home"
APPLIES=(); SYNCS=()
for rep in $(seq 1 "$REPS"); do
  start_server "$T/a$rep"
  t0=$(now)
  "$CTL" --config "$T/a$rep/admin.yaml" apply -f "$T/work/guests" >/dev/null
  t1=$(now)
  APPLIES+=("$(echo "$t1 - $t0" | bc -l)")
  [ "$("$CTL" --config "$T/a$rep/admin.yaml" get guests -o name | wc -l)" -eq "$N" ]
  stop_server "$SERVER_PID"

  start_server "$T/b$rep"
  CFG="$T/b$rep/admin.yaml"
  start_controller
  # The waiter watches before the GitSync exists: its own start is not part of the sync.
  "$CTL" --config "$CFG" wait gitsync bench --for condition=Ready --timeout 10m >/dev/null &
  waiter=$!
  sleep 0.5
  t0=$(now)
  "$CTL" --config "$CFG" apply -f "$T/gitsync.yaml" >/dev/null
  wait "$waiter"
  t1=$(now)
  SYNCS+=("$(echo "$t1 - $t0" | bc -l)")
  [ "$("$CTL" --config "$CFG" get guests -o name | wc -l)" -eq "$N" ]
  if [ "$rep" -lt "$REPS" ]; then stop_server "$CTRL_PID"; stop_server "$SERVER_PID"; fi
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
APPLY=$(median "${APPLIES[@]}"); SYNC=$(median "${SYNCS[@]}")
printf 'first apply of %d Guests (median of %d): phoenixctl apply -f %.2f s, GitSync first sync %.2f s: ratio %.2f (target <= 1.5)\n' \
  "$N" "$REPS" "$APPLY" "$SYNC" "$(echo "$SYNC / $APPLY" | bc -l)"
echo "  runs: apply ${APPLIES[*]}; sync ${SYNCS[*]}"

# 3. A no-change sync: writes over a window holding at least one interval sync.
syncs() {
  curl -fsS "http://$CTRL_HTTP/metrics" | awk '/^phoenix_gitsync_syncs_total\{gitsync="bench",result="success"\}/ {print $2}'
}
synced_past() { [ "$(syncs)" -gt "$1" ]; }
s0=$(syncs)
wait_until 60 synced_past "$s0"      # the window starts right after a sync
s1=$(syncs); w0=$(store_writes)
wait_until 60 synced_past "$s1"      # ... and holds the next one
w1=$(store_writes)
echo "no-change sync: $((w1 - w0)) store writes over $(( $(syncs) - s1 )) sync(s) (target 0)"

# 4 and 5: commit-to-applied latency. Each commit removes one Guest; the time runs from the
# push to `phoenixctl wait --for=delete` returning (it watches; started before the push).
# latency NAME WEBHOOK(0|1): prints seconds.
latency() {
  local name="$1" hook="$2" waiter t0 t1 body sig
  "$CTL" --config "$CFG" wait guest "$name" --for=delete --timeout 60s >/dev/null &
  waiter=$!
  sleep 0.5   # the waiter is watching
  G rm -q "guests/$name.yaml" && G commit -q -m "remove $name"
  t0=$(now)
  G push -q "$T/estate.git" HEAD:refs/heads/main
  if [ "$hook" = 1 ]; then
    body="{\"ref\":\"refs/heads/main\",\"after\":\"$(G rev-parse HEAD)\"}"
    sig="$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$KEY" -r | cut -d' ' -f1)"
    curl -fsS -o /dev/null -X POST -H "Content-Type: application/json" \
      -H "X-Hub-Signature-256: sha256=$sig" --data-binary "$body" "http://$CTRL_HTTP/hooks/gitsync/bench"
  fi
  wait "$waiter"
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}
stats() { # label target: reads seconds on stdin
  sort -n | awk -v label="$1" -v target="$2" '{v[NR]=$1; s+=$1} END {
    p99=v[int(NR*0.99+0.999)]; if (p99=="") p99=v[NR];
    printf "%s: n=%d median %.3f s, p99 %.3f s, max %.3f s (target %s)\n", label, NR, v[int((NR+1)/2)], p99, v[NR], target}'
}
# Right after an interval sync, so the webhook's sync does not ride on an interval one.
for i in $(seq 1 "$R"); do
  s=$(syncs); wait_until 60 synced_past "$s"
  latency "g$(printf %04d "$i")" 1
done | stats "webhook commit-to-applied" "p99 <= 1 s"
for i in $(seq $((R + 1)) $((R + RI))); do
  latency "g$(printf %04d "$i")" 0
done | stats "interval ${INTERVAL}s commit-to-applied" "<= $((INTERVAL + 1)) s"
