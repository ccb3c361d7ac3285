#!/usr/bin/env bash
# Cost of Secrets encrypted at rest: Secret-sized creates, a range and gets on the embedded
# store, bare (baseline) vs through the encryption envelope, alternating in one process;
# prints medians and ratios (encrypted / baseline). Extra arguments go to the benchmark, e.g.
#   hack/bench/encryption/run.sh --n 2000 --rounds 5
set -euo pipefail
cd "$(dirname "$0")/../../.."
exec cargo run --release --quiet -p phoenix-apiserver --example encryption_bench -- "$@"
