#!/usr/bin/env bash
# `adapter-host new` in each language, as an adapter author would use it: the scaffold is
# created outside the checkout, passes its own tests natively, builds to a component, and that
# component, run by the host's sandbox on its fixture, emits the expected event. The tools are
# those of build-polyglot.sh (run it first; test.sh does); Rust builds share one target folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --quiet -p adapter-host
host=$target/debug/adapter-host
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The component at $2 accepts fixtures/deal-won.json as exactly one deal.won of D-42 whose
# amount is the string "1234.50".
expect_deal_won() { # lang, component
    "$host" run --json --no-cache --webhook "$work/$1/fixtures/deal-won.json" --org org-1 "$2" >"$work/$1.out"
    python3 - "$work/$1.out" "$1" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
outcome = report["outcome"]
assert outcome["status"] == "accepted", f"{sys.argv[2]}: {outcome}"
[event] = outcome["events"]
payload = json.loads(event["payload"]) if isinstance(event["payload"], str) else event["payload"]
assert (event["event_type"], event["entity_id"], payload["amount"]) == ("deal.won", "D-42", "1234.50"), event
print(f"scaffold {sys.argv[2]}: ok")
PY
}

for lang in rust python js; do
    "$host" new "$lang" --lang "$lang" --dir "$work" >/dev/null
done
# Creating over a project is refused.
if "$host" new rust --dir "$work" 2>/dev/null; then
    echo "adapter-host new overwrote a project" >&2
    exit 1
fi

(
    cd "$work/rust"
    export CARGO_TARGET_DIR=$target/scaffolds
    cargo test --quiet
    cargo build --quiet --release --target wasm32-wasip2
)
expect_deal_won rust "$target/scaffolds/wasm32-wasip2/release/rust.wasm"

(
    cd "$work/python"
    python3 -m unittest --quiet
    COMPONENTIZE_PY=$target/guests/tools/py/bin/componentize-py ./build.sh >/dev/null
)
expect_deal_won python "$work/python/dist/python.wasm"

(
    cd "$work/js"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
    npm test --silent >/dev/null
    npm run --silent build >/dev/null
)
expect_deal_won js "$work/js/dist/js.wasm"
