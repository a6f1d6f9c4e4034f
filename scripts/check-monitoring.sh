#!/usr/bin/env bash
# Checks host/monitoring/ with promtool: the alerting rules parse, their unit tests pass, and
# every query of the Grafana dashboard parses as PromQL (Grafana's variables replaced).
set -euo pipefail
cd "$(dirname "$0")/../host/monitoring"

promtool check rules alerts.yml
promtool test rules alerts.test.yml

# The dashboard's queries, as recording rules: promtool then parses each.
rules=$(mktemp)
trap 'rm -f "$rules"' EXIT
{
    echo "groups:"
    echo "  - name: grafana-dashboard"
    echo "    rules:"
    grep '"expr": ' grafana-dashboard.json \
        | sed -e 's/^ *"expr": "//' -e 's/",\{0,1\}$//' -e 's/\\"/"/g' \
            -e 's/\$__rate_interval/5m/g' -e 's/\$instance/.*/g' -e "s/'/''/g" \
        | awk '{ printf "      - record: dashboard:query:%d\n        expr: '"'"'%s'"'"'\n", NR, $0 }'
} >"$rules"
queries=$(grep -c '"expr":' grafana-dashboard.json)
echo "dashboard: $queries queries"
promtool check rules "$rules"
