#!/usr/bin/env bash
# Tests the JS SDK (sdk/reachd.js): its logic against a fake socket server in Node, then end to
# end in headless Chromium against a real reachd.
#   REACHD_BIN     path to the server binary (default: target/debug/reachd under the repo root)
#   SDK_FROM_DISK  1 = pages load sdk/reachd.js from the work tree, not the binary's embedded copy
# Needs Node 20+, npm with access to the npm registry, and Debian's chromium package (installed
# here with apt-get when /usr/bin/chromium is missing). Dependencies (playwright-core, ws) are
# installed with `npm ci` from package-lock.json into a throw-away folder.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"

REACHD_BIN="${REACHD_BIN:-target/debug/reachd}"
case "$REACHD_BIN" in
  /*) ;;
  *) REACHD_BIN="$REPO_ROOT/$REACHD_BIN" ;;
esac
export REACHD_BIN

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y chromium >/dev/null 2>&1 || {
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq chromium
  }
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cp "$HERE/package.json" "$HERE/package-lock.json" "$HERE/.npmrc" "$WORK/"
(cd "$WORK" && npm ci --no-audit --no-fund --loglevel=error)

mkdir -p "$REPO_ROOT/artifacts/browser"
cd "$HERE"
NODE_PATH="$WORK/node_modules" node --test --test-concurrency=1 --test-timeout=120000 --test-reporter=spec "$HERE"/test/*.test.js
