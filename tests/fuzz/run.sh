#!/usr/bin/env bash
# Fuzz reachd with schemathesis: the Twilio dialects (Twilio's OpenAPI files, restricted to the
# resources reachd serves) and reachd's own document (GET /api/v1/openapi.json).
#   REACHD_BIN         path to the server binary (default: target/debug/reachd from the repo root)
#   PYTHON             interpreter used to create the virtualenv (default: python3)
#   FUZZ_MAX_EXAMPLES  test cases per operation and phase (default: 100; keeps the run under 5 min)
#   FUZZ_SEED          the seed (default: fixed, so runs are reproducible)
# Extra arguments go to run.py (e.g. --only reachd, --report-dir DIR).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
export REACHD_BIN="${REACHD_BIN:-$repo_root/target/debug/reachd}"
export FUZZ_MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"

venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT

"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --requirement "$here/requirements.txt"

# schemathesis keeps nothing between runs (no example database, no cache directory).
cd "$venv"
"$venv/bin/python" "$here/run.py" "$@"
