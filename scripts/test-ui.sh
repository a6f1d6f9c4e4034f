#!/usr/bin/env bash
# The web page's end-to-end tests (tests/ui): headless Chromium (Debian's `chromium`, driven by
# playwright-core from npm) against the real `adapter-host` binary on a loopback port.
#
#   scripts/test-ui.sh                # build what is needed, run the tests
#   scripts/test-ui.sh --screenshots  # ... and refresh docs/screenshots/ (the README's)
#
# Screenshots of every run are in target/ui-artifacts/. In CI (CI=true) a missing Chromium is
# installed with apt-get. The host is the debug build the Rust test suite makes, and the
# guests are built where tests/artifacts builds them, so after scripts/test.sh's cargo run
# nothing is compiled again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--screenshots" ]; then
    export UI_SCREENSHOTS=docs
fi
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
    if [ "${CI:-}" = true ]; then
        apt-get update && apt-get install -y --no-install-recommends chromium
    else
        echo "no Chromium at $chromium: apt-get install chromium (or set CHROMIUM)" >&2
        exit 1
    fi
fi
command -v npm >/dev/null 2>&1 || { echo "the UI tests need node and npm (20 or later)" >&2; exit 1; }

target_dir=${CARGO_TARGET_DIR:-target}
# The components the tests upload, built as tests/artifacts builds them (same target folder).
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 --manifest-path sample-adapters/Cargo.toml \
    --target-dir "$target_dir/guests" -p champion-health -p hostile -p poller
cargo build -p adapter-host

(cd tests/ui && npm ci --no-audit --no-fund --loglevel=error)
started=$(date +%s)
(cd tests/ui && npm test)
echo "UI tests took $(( $(date +%s) - started )) s; screenshots in $target_dir/ui-artifacts/"
