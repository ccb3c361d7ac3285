#!/usr/bin/env bash
# Guest benchmark (issue 17): N LXC Guests created and started against fakepve (20 ms of
# latency on every request, time scale 1) through `phoenix serve` and the Guest controller,
# and, in the same run for each N, the baseline of one sequential create-poll-start-poll per
# guest (the orchestrator script's way). Reports time to all-Ready, PVE calls per guest for the
# create (by endpoint), calls in the first resync after the creates, calls per steady-state
# resync, the adaptive rate limit at the end, with ratios against the baseline.
#
# Two parts, each against its own baseline run:
#  1. instant tasks (--create-secs 0), N = 20 and 100 (GUESTS="20 100 500" for more):
#     Phoenix with defaults, and with --pve-requests-per-second 0 (no limit at all);
#  2. 1 s creates (--create-secs 1), N = 100 (SLOW_GUESTS="..."; SLOW_GUESTS= skips it):
#     Phoenix with defaults, and with 16 reconciles and 16 tasks per node and per storage.
# Needs the fakepve venv (hack/install-deps.sh). Extra arguments go to every run, e.g.
#   hack/bench/guests/run.sh --resync-secs 5
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
bench="$CARGO_TARGET_DIR/$dir/examples/guest_bench"

# In its own process group (with the server and fakepve it starts), killed on exit, failure
# or interrupt.
for n in ${GUESTS:-20 100}; do
  echo "== instant tasks, N = $n"
  hack/bench/in-group.sh "$bench" --guests "$n" --latency 0.02 --create-secs 0 \
    --also "no-limit:rps=0" "$@"
done
for n in ${SLOW_GUESTS-100}; do
  echo "== 1 s creates, N = $n"
  hack/bench/in-group.sh "$bench" --guests "$n" --latency 0.02 --create-secs 1 \
    --also "wide-16:concurrency=16,tasks-per-node=16,tasks-per-storage=16,tasks-per-thin-storage=16" "$@"
done
