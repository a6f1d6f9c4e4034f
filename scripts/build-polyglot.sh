#!/usr/bin/env bash
# Builds the sample adapters written in Python and JavaScript from source, with the tools
# pinned in their folders (componentize-py from PyPI, componentize-js from npm), into
# target/guests/polyglot/<stem>.wasm, where the golden tests find them. The tools install
# under target/guests/tools (a venv) and the JS sample's node_modules (`npm ci`). A component
# is rebuilt only when its sources, lock files or the WIT changed.
#
# Needs python3 with venv, node and npm: on CI (CI=true) missing Debian packages are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}/guests
out=$target/polyglot
tools=$target/tools
mkdir -p "$out" "$tools"

need=()
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
    if [ "${CI:-}" = true ]; then
        apt-get update && apt-get install -y --no-install-recommends "${need[@]}"
    else
        echo "build-polyglot: install ${need[*]} (Debian packages) first" >&2
        exit 1
    fi
fi

# A digest of everything a component is built from; the build is skipped when it matches.
digest() {
    (cd "$root" && find "$@" -type f -not -path '*/node_modules/*' -not -path '*/dist/*' \
        -not -path '*/__pycache__/*' -not -path '*/.venv/*' -not -path '*/golden/*' -print0 | sort -z | xargs -0 sha256sum) |
        sha256sum | cut -d' ' -f1
}

build() { # stem, folder, command...
    local stem=$1 folder=$2
    shift 2
    local stamp=$out/$stem.inputs want
    want=$(digest wit "$folder")
    if [ -f "$out/$stem.wasm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    echo "build-polyglot: building $stem"
    (cd "$root/$folder" && "$@")
    cp "$root/$folder/dist/$stem.wasm" "$out/$stem.wasm"
    echo "$want" >"$stamp"
}

# Python: componentize-py in a venv of its own.
py=sample-adapters/custom-crm-python
if ! cmp -s "$py/requirements.txt" "$tools/py.requirements" 2>/dev/null || [ ! -x "$tools/py/bin/componentize-py" ]; then
    python3 -m venv "$tools/py"
    "$tools/py/bin/pip" install --quiet --disable-pip-version-check -r "$py/requirements.txt"
    cp "$py/requirements.txt" "$tools/py.requirements"
fi
COMPONENTIZE_PY=$tools/py/bin/componentize-py build custom_crm_python "$py" ./build.sh

# JavaScript: componentize-js and rolldown from the lock file.
js=sample-adapters/custom-crm-js
if ! cmp -s "$js/package-lock.json" "$tools/js.package-lock" 2>/dev/null || [ ! -d "$js/node_modules" ]; then
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$js/package-lock.json" "$tools/js.package-lock"
fi
build custom_crm_js "$js" npm run --silent build
