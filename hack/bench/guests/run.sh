#!/usr/bin/env bash
# Guest benchmark (issue 17): N LXC Guests created and started against fakepve (20 ms of
# latency on every request, instant tasks, time scale 1) through `phoenix serve` and the Guest
# controller, and, in the same run for each N, the baseline of one sequential
# create-poll-start-poll per guest (the orchestrator script's way). Reports time to all-Ready,
# PVE calls per guest for the create (by endpoint), calls in the first resync after the creates,
# and calls per steady-state resync, with ratios. Runs N = 20 and 100 (GUESTS="20 100 500" for
# more). Needs the fakepve venv (hack/install-deps.sh). Extra arguments go to the benchmark, e.g.
#   hack/bench/guests/run.sh --latency 0.02 --create-secs 0 --resync-secs 5
# PROFILE=dev runs the debug build (counts are the same; wall times are PVE-latency bound).
set -euo pipefail
cd "$(dirname "$0")/../../.."
hack/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
profile="${PROFILE:-release}"
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
# The benchmark starts `phoenix serve` and fakepve.
cargo build --profile "$profile" --quiet -p phoenix --bin phoenix
cargo build --profile "$profile" --quiet -p phoenix-guest --example guest_bench
export PHOENIX_BIN="$CARGO_TARGET_DIR/$dir/phoenix"

for n in ${GUESTS:-20 100}; do
  echo "== N = $n"
  # In its own process group (with the server and fakepve it starts), killed on exit, failure
  # or interrupt.
  hack/bench/in-group.sh "$CARGO_TARGET_DIR/$dir/examples/guest_bench" --guests "$n" \
    --latency 0.02 --create-secs 0 "$@"
done
