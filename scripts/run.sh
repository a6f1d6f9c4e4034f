#!/usr/bin/env bash
# Builds the sample adapter and starts the host on its embedded default (SQLite, local
# encrypted secret store, in-process bus) in ./data, with the demo connection of
# host/demo/config.toml. Send it a delivery with scripts/send-demo.sh.
#
# The management API is on, keyed with a local HS256 key generated once into data/jwt.key
# (mode 600): `scripts/token.sh` prints a token for the demo tenant (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 \
    --manifest-path sample-adapters/Cargo.toml -p champion-health
data_dir=${ADAPTER_HOST_DATA_DIR:-data}
mkdir -p "$data_dir"
if [ ! -s "$data_dir/jwt.key" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 > "$data_dir/jwt.key")
fi
exec cargo run --release -p adapter-host -- serve --config host/demo/config.toml \
    --data-dir "$data_dir" --jwt-key-file "$data_dir/jwt.key" "$@"
