#!/usr/bin/env bash
# Runs the twilio-node compatibility suite against a reachd binary.
#   REACHD_BIN   path to the server binary (default: target/debug/reachd under the repo root)
# Needs Node 20+ and npm with access to the npm registry. Dependencies are installed
# with `npm ci` from package-lock.json into a throw-away folder.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../../.." && pwd)"

REACHD_BIN="${REACHD_BIN:-target/debug/reachd}"
case "$REACHD_BIN" in
  /*) ;;
  *) REACHD_BIN="$REPO_ROOT/$REACHD_BIN" ;;
esac
export REACHD_BIN

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cp "$HERE/package.json" "$HERE/package-lock.json" "$HERE/.npmrc" "$WORK/"
(cd "$WORK" && npm ci --no-audit --no-fund --loglevel=error)

cd "$HERE"
NODE_PATH="$WORK/node_modules" node --test --test-concurrency=1 --test-reporter=spec "$HERE"/test/*.test.js
