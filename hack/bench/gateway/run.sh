#!/usr/bin/env bash
# Gateway benchmark: a Gateway of 5 000 routes (10 000 locations, TLS on every 10th, rate
# limits, caches, access rules) rendered and delivered to a real nginx on 127.0.0.1 (random
# ports, a temp directory): render time, `nginx -t` time, reload time, config size, the full
# cycle of a one-route change, and 100 cycles of unchanged input (must cause 0 reloads);
# each against a 1-route baseline run the same way in the same process. ~1 minute.
# Needs nginx (hack/install-deps.sh). Extra arguments go to the benchmark, e.g.
#   hack/bench/gateway/run.sh --routes 5000 --unchanged 100
set -euo pipefail
cd "$(dirname "$0")/../../.."
hack/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet -p phoenix-nginx --bin gateway-bench

# In its own process group (with the nginx it starts), killed on exit, failure or interrupt.
exec hack/bench/in-group.sh "$CARGO_TARGET_DIR/release/gateway-bench" "$@"
