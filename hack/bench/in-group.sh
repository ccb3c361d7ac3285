#!/usr/bin/env bash
# Runs a benchmark binary in its own process group (with the servers, nginx, etcd or fakepve
# it starts), which is killed on exit, failure or interrupt, so that nothing is left running.
#   hack/bench/in-group.sh BINARY [ARGS...]
set -euo pipefail
setsid "$@" &
bench=$!
cleanup() { kill -KILL -- "-$bench" 2>/dev/null || true; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
wait "$bench"
