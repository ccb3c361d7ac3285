#!/usr/bin/env bash
# The one test command: installs what the tests need (idempotent), then checks formatting,
# lints, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo build (the binaries the end-to-end tests run)"
cargo build --locked -p phoenix-apiserver -p phoenixctl

echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
