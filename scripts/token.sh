#!/usr/bin/env bash
# Prints a management API token for the demo host of scripts/run.sh: tenant `demo-tenant`,
# org `org-456`, role tenant_admin, valid for an hour, signed with data/jwt.key. Extra
# arguments go to `adapter-host token` (`--org`, `--role viewer`, `--ttl-secs`, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=${ADAPTER_HOST_DATA_DIR:-data}
exec cargo run -q --release -p adapter-host -- token --jwt-key-file "$data_dir/jwt.key" \
    --tenant demo-tenant --org org-456 "$@"
