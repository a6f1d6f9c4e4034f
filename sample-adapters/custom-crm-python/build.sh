#!/usr/bin/env bash
# Builds the component: dist/custom_crm_python.wasm. Needs componentize-py (PyPI, pinned in
# requirements.txt): `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt`, or
# set COMPONENTIZE_PY to its path.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p dist
"${COMPONENTIZE_PY:-componentize-py}" -d ../../wit -w crm:adapter/crm-adapter@0.2.0 \
    componentize app -o dist/custom_crm_python.wasm
