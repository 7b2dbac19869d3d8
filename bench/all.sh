#!/usr/bin/env bash
# Takes every figure of docs/benchmarks.md in one go: builds the release binaries, then runs
# each reachd-bench scenario (PostgreSQL ones start a scratch PostgreSQL of their own, so the
# Debian packages `postgresql` and, for the HTTP scenarios, `wrk` should be installed).
#
#   bash bench/all.sh [reachd-bench options…]     # e.g. --rounds 5 --seconds 4
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
bench=target/release/reachd-bench
run() { echo; echo "== reachd-bench $*"; "$bench" "$@"; }
run "$@" http
run "$@" ping-backends
run "$@" burst
run "$@" --database postgres burst
run "$@" webhooks
run "$@" --database postgres webhooks
run "$@" node-loss
run "$@" node-loss --users 200
run "$@" memory
run "$@" sockets
