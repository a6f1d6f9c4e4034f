#!/usr/bin/env bash
# Sends a Standard Webhooks-signed delivery to the demo connection started by scripts/run.sh.
#   scripts/send-demo.sh [BODY_FILE]        a correctly signed delivery
#   scripts/send-demo.sh --bad [BODY_FILE]  the same with a wrong signature (refused with 401)
set -euo pipefail
cd "$(dirname "$0")/.."

secret="ZGVtby1zaWduaW5nLXNlY3JldC1ub3QtZm9yLXByb2R1Y3Rpb24="   # host/demo/config.toml
if [ "${1:-}" = "--bad" ]; then
    secret="d3Jvbmctc2VjcmV0"
    shift
fi
body_file="${1:-sample-adapters/champion-health/fixtures/enrollment-1kb.json}"
url="${ADAPTER_HOST_URL:-http://127.0.0.1:8080}/v1/hooks/demo-champion"
id="msg_$(date +%s%N)"
ts="$(date +%s)"
signature="$(python3 - "$secret" "$id" "$ts" "$body_file" <<'PY'
import base64, hashlib, hmac, sys
secret, msg_id, ts, path = sys.argv[1:]
body = open(path, "rb").read()
mac = hmac.new(base64.b64decode(secret), f"{msg_id}.{ts}.".encode() + body, hashlib.sha256)
print("v1," + base64.b64encode(mac.digest()).decode())
PY
)"
curl -sS -w '\nHTTP %{http_code}\n' "$url" \
    -H 'content-type: application/json' \
    -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: $signature" \
    --data-binary "@$body_file"
