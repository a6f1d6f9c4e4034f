#!/usr/bin/env bash
# Runs every test of the project: the host (unit and integration tests, with the guests built
# from source for wasm32-wasip2, and the Python and JavaScript samples built by
# build-polyglot.sh), the pipeline and API tests a second time on PostgreSQL, the guest SDK and
# the sample adapters natively, the scaffolds of `adapter-host new` in each language, and the
# web page in headless Chromium (scripts/test-ui.sh).
#
# The scale-out tests use the local PostgreSQL (ADAPTER_HOST_TEST_POSTGRES_URL, default
# postgres://postgres@127.0.0.1:5432/test) and NATS with JetStream (ADAPTER_HOST_TEST_NATS_URL,
# default nats://127.0.0.1:4222); each test makes its own schema and stream and drops them.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

if cargo nextest --version >/dev/null 2>&1; then
    run=(cargo nextest run --no-fail-fast)
else
    run=(cargo test --no-fail-fast)
fi
status=0
# The sample adapters in Python and JavaScript, built from source (the golden tests run them).
scripts/build-polyglot.sh
"${run[@]}" --workspace || status=$?

# The pipeline and API suites again, on the PostgreSQL store (one schema per data directory).
export ADAPTER_HOST_TEST_RUN="r$$"
postgres_url=${ADAPTER_HOST_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
ADAPTER_HOST_TEST_BACKEND=postgres \
    ADAPTER_HOST_MASTER_KEY="$(head -c 32 /dev/urandom | base64)" \
    "${run[@]}" -p adapter-host --test webhook --test api || status=$?
# What a test that failed half-way left behind.
if command -v psql >/dev/null 2>&1; then
    psql "$postgres_url" -qAt -c "SELECT 'DROP SCHEMA \"' || nspname || '\" CASCADE;' FROM pg_namespace WHERE nspname LIKE 't\_${ADAPTER_HOST_TEST_RUN}\_%'" \
        | psql "$postgres_url" -q >/dev/null 2>&1 || true
fi

(cd sample-adapters && cargo test --workspace --no-fail-fast) || status=$?
(cd sample-adapters/custom-crm-python && python3 -m unittest --quiet) || status=$?
(cd sample-adapters/custom-crm-js && npm test --silent) || status=$?
# `adapter-host new` in each language: the scaffold builds, passes its own tests, and its
# component runs on its fixture.
scripts/test-scaffolds.sh || status=$?

# The web page at /ui, end to end in headless Chromium against the debug binary built above.
scripts/test-ui.sh || status=$?

# The alerting rules (syntax and their unit tests) and the dashboard's queries, by promtool
# (Debian's `prometheus` package; CI installs it). That every metric they name is exported is
# a unit test of the host (metrics.rs).
if [ "${CI:-}" = true ] && ! command -v promtool >/dev/null 2>&1; then
    apt-get update && apt-get install -y --no-install-recommends prometheus
fi
if command -v promtool >/dev/null 2>&1; then
    scripts/check-monitoring.sh || status=$?
else
    echo "promtool not found: the monitoring rules check is skipped"
fi
exit "$status"
