#!/usr/bin/env bash
# Builds the sample adapter and runs it through the host's sandbox, with the production
# limits, on its sample delivery. Extra arguments go to `adapter-host run` (e.g. --json).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 \
    --manifest-path sample-adapters/Cargo.toml -p champion-health
cargo run --release -p adapter-host -- check \
    sample-adapters/target/wasm32-wasip2/release/champion_health.wasm
cargo run --release -p adapter-host -- run \
    sample-adapters/target/wasm32-wasip2/release/champion_health.wasm \
    --webhook sample-adapters/champion-health/fixtures/enrollment-1kb.json "$@"
