#!/usr/bin/env bash
# Mesh benchmark: 5 000 services against a 1-service baseline run the same way in the same
# process: Traefik render + atomic file write, unchanged cycles (must write nothing), Caddy
# render + full load through the admin API, and a one-service change timed until it is live
# (a request reaches the new backend). A real Caddy on 127.0.0.1 (random ports, a temp
# directory). Needs caddy (hack/install-deps.sh). Extra arguments go to the benchmark, e.g.
#   hack/bench/mesh/run.sh --services 5000 --reps 5 --unchanged 100
set -euo pipefail
cd "$(dirname "$0")/../../.."
hack/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet -p phoenix-mesh --bin mesh-bench

# In its own process group (with the Caddy it starts), killed on exit, failure or interrupt.
exec hack/bench/in-group.sh "$CARGO_TARGET_DIR/release/mesh-bench" "$@"
