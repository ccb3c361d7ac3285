#!/usr/bin/env bash
# Store write benchmark: raw etcd-client puts (baseline) vs the etcd backend vs the embedded
# backend at concurrency 1, 16 and 64, in one process against an etcd it starts itself.
# Needs etcd (Debian's etcd-server). Extra arguments go to the benchmark, e.g.
#   hack/bench/store/run.sh --secs 5 --rounds 3 --levels 1,16,64
set -euo pipefail
cd "$(dirname "$0")/../../.."
exec cargo run --release --quiet -p phoenix-store --features testing --bin store-bench -- "$@"
