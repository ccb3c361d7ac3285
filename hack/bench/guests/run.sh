#!/usr/bin/env bash
# Guest benchmark: converge 200 LXC Guests against fakepve (20 ms of latency on every request,
# time scale 1 with creates taking 1 s) through `phoenix serve` and the Guest controller, and,
# in the same run, the naive baseline of one sequential create-and-wait (then start-and-wait)
# per guest, as the orchestrator script did. Reports time to all-Ready, PVE calls per guest for
# the create, and PVE calls per steady-state resync (Phoenix: one /cluster/resources per resync,
# nothing per unchanged guest; baseline: config + status per guest), with ratios. ~6 minutes.
# Needs the fakepve venv (hack/install-deps.sh). Extra arguments go to the benchmark, e.g.
#   hack/bench/guests/run.sh --guests 200 --latency 0.02 --create-secs 1 --resync-secs 5
set -euo pipefail
cd "$(dirname "$0")/../../.."
hack/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# The benchmark starts `phoenix serve` (the release binary) and fakepve.
cargo build --release --quiet -p phoenix --bin phoenix
cargo build --release --quiet -p phoenix-guest --example guest_bench
export PHOENIX_BIN="$CARGO_TARGET_DIR/release/phoenix"

# In its own process group (with the server and fakepve it starts), killed on exit, failure or interrupt.
exec hack/bench/in-group.sh "$CARGO_TARGET_DIR/release/examples/guest_bench" "$@"
