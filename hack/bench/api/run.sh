#!/usr/bin/env bash
# API server benchmark: batch apply of 10 000 Guests with phoenixctl into `phoenix serve` on
# the embedded store and on etcd (next to raw etcd-client puts of the same JSON), watch
# fan-out latency (100 watchers, 2 000 objects/s), and footprint (RSS, cold start,
# `phoenixctl get guests` of 10 000). One run, about a minute, starts its own etcd and servers.
# Needs etcd (Debian's etcd-server). Extra arguments go to the benchmark, e.g.
#   hack/bench/api/run.sh --objects 10000 --watchers 100 --rate 2000 --watch-secs 5 --reps 3 \
#     --etcd-rounds 3
# Partial runs: --etcd-only (the etcd rows), --watch-only [--typed] (fan-out; prints the
# server's pid, for profiling it).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet -p phoenix -p phoenixctl -p phoenix-e2e --bin phoenix \
  --bin phoenixctl --bin api-bench
export PHOENIX_BIN="$CARGO_TARGET_DIR/release/phoenix"
export PHOENIXCTL_BIN="$CARGO_TARGET_DIR/release/phoenixctl"

# In its own process group (with the servers, phoenixctl and etcd it starts), killed on exit, failure or interrupt.
exec hack/bench/in-group.sh "$CARGO_TARGET_DIR/release/api-bench" "$@"
