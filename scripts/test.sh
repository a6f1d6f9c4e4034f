#!/usr/bin/env bash
# Runs every test of the project: the host (unit and integration tests, with the guests built
# from source for wasm32-wasip2), then the guest SDK and the sample adapters natively.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
(cd sample-adapters && cargo test --workspace --no-fail-fast)
