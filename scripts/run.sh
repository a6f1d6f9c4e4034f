#!/usr/bin/env bash
# Builds the sample adapter and starts the host on its embedded default (SQLite, local
# encrypted secret store, in-process bus) in ./data, with the demo connection of
# host/demo/config.toml. Send it a delivery with scripts/send-demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 \
    --manifest-path sample-adapters/Cargo.toml -p champion-health
exec cargo run --release -p adapter-host -- serve --config host/demo/config.toml "$@"
