#!/usr/bin/env bash
# Run the twilio-python compatibility suite against a reachd binary.
#   REACHD_BIN   path to the server binary (default: target/debug/reachd from the repo root)
#   PYTHON       interpreter used to create the virtualenv (default: python3)
# Extra arguments are passed to pytest (e.g. -k users -x).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../../.." && pwd)"
export REACHD_BIN="${REACHD_BIN:-$repo_root/target/debug/reachd}"

venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT

"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --requirement "$here/requirements.txt"

cd "$here"
"$venv/bin/python" -m pytest -p no:cacheprovider "$@" .
