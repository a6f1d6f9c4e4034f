#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with schemathesis (PyPI): the host is
# started on a fresh data directory with a random JWT key, schemathesis reads /openapi.json
# and sends every operation generated inputs (schema examples, boundary cases, random ones)
# as a platform-level tenant_admin acting in one org, and fails on any 5xx answer.
#
#   scripts/schemathesis.sh                 # ~100 cases per operation
#   SCHEMATHESIS_EXAMPLES=500 scripts/schemathesis.sh
#
# Needs python3 (venv, pip) and cargo; the tool is installed in target/schemathesis.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=target/schemathesis
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$version"
fi

cargo build --quiet -p adapter-host
data=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
ADAPTER_HOST_JWT_HS256_KEY=$key target/debug/adapter-host serve \
    --data-dir "$data" --listen "127.0.0.1:$port" >"$data/host.log" 2>&1 &
host=$!
cleanup() {
    kill "$host" 2>/dev/null || true
    wait "$host" 2>/dev/null || true
    rm -rf "$data"
}
trap cleanup EXIT

for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

# A platform-level tenant_admin token (HS256), minted with the standard library only.
token=$(KEY=$key python3 - <<'PY'
import base64, hashlib, hmac, json, os, time
def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = b64(json.dumps({"sub": "schemathesis", "tenant_id": "fuzz-tenant",
                         "roles": ["tenant_admin"], "exp": int(time.time()) + 3600}).encode())
signature = hmac.new(os.environ["KEY"].encode(), f"{header}.{claims}".encode(), hashlib.sha256)
print(f"{header}.{claims}.{b64(signature.digest())}")
PY
)

# Rows for the by-id operations to find (random ids only ever meet 404s): an adapter, and when
# the test suite has built the sample guests, a version of champion-health, a connection, a
# delivery with its event; a subscriber and a replay. Their ids go to schemathesis as fixed
# path parameters.
base="http://127.0.0.1:$port"
api() {
    curl -fsS -H "Authorization: Bearer $token" -H "X-Org-Id: org-fuzz" "$@"
}
field() {
    python3 -c "import json, sys; print(json.load(sys.stdin)$1)"
}
json=(-H "content-type: application/json")
config="$data/schemathesis.toml"
echo "[parameters]" >"$config"
adapter=$(api "${json[@]}" -d '{"name": "fuzzed"}' "$base/v1/adapters" | field '["id"]')
echo "\"path.adapter_id\" = \"$adapter\"" >>"$config"
wasm=target/guests/wasm32-wasip2/release/champion_health.wasm
if [ -f "$wasm" ]; then
    api --data-binary "@$wasm" "$base/v1/adapters/$adapter/versions" >/dev/null
    # The compile runs off the request: a connection takes a ready version only.
    for _ in $(seq 600); do
        status=$(api "$base/v1/adapters/$adapter/versions/1" | field '["status"]')
        [ "$status" = compiling ] || break
        sleep 0.5
    done
    [ "$status" = ready ] || { echo "champion-health version 1 is $status" >&2; exit 1; }
    api -X PUT "${json[@]}" -d '{"value": "fuzz-signing"}' "$base/v1/secrets/gh" >/dev/null
    connection=$(api "${json[@]}" "$base/v1/connections" -d '{"provider": "custom",
        "adapter_id": "'"$adapter"'", "signature": {"scheme": "github"}, "secret": "gh",
        "settings": {"default_org_id": "org-fuzz"}}' | field '["id"]')
    body=sample-adapters/champion-health/fixtures/enrollment-1kb.json
    signature=$(python3 -c 'import hashlib, hmac, sys
print("sha256=" + hmac.new(b"fuzz-signing", open(sys.argv[1], "rb").read(), hashlib.sha256).hexdigest())' "$body")
    delivery=$(curl -fsS -H "x-hub-signature-256: $signature" "${json[@]}" --data-binary "@$body" \
        "$base/v1/hooks/$connection" | field '["delivery_id"]')
    event=$(api "$base/v1/events" | field '["items"][0]')
    cat >>"$config" <<TOML
"path.version" = 1
"path.connection_id" = "$connection"
"path.delivery_id" = "$delivery"
"path.event_id" = "$(echo "$event" | python3 -c 'import ast, sys; print(ast.literal_eval(sys.stdin.read())["event_id"])')"
"path.seq" = $(echo "$event" | python3 -c 'import ast, sys; print(ast.literal_eval(sys.stdin.read())["seq"])')
TOML
fi
# A subscriber signs with a Standard Webhooks key (whsec_<base64>).
api -X PUT "${json[@]}" -d '{"value": "whsec_ZnV6ei1zdWJzY3JpYmVy"}' "$base/v1/secrets/sub" >/dev/null
subscriber=$(api "${json[@]}" -d '{"url": "https://subscriber.example/hook", "secret": "sub"}' \
    "$base/v1/subscribers" | field '["id"]')
replay=$(api "${json[@]}" -d '{"from": 0, "to": 1000}' "$base/v1/replays" | field '["id"]')
cat >>"$config" <<TOML
"path.subscriber_id" = "$subscriber"
"path.replay_id" = "$replay"
TOML

# One worker: with two, the fuzzer's threads sometimes crash inside CPython 3.11's AST
# constructor ("AST constructor recursion depth mismatch", a thread-safety bug of the
# interpreter), failing the run with no answer from the host involved.
status=0
"$venv/bin/schemathesis" --config-file "$config" run "http://127.0.0.1:$port/openapi.json" \
    --checks not_a_server_error \
    --header "Authorization: Bearer $token" \
    --header "X-Org-Id: org-fuzz" \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-100}" \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    --workers 1 || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- host log (last 50 lines) ---" >&2
    tail -50 "$data/host.log" >&2
fi
exit "$status"
