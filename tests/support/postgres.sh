#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the test suites, or stops it.
#
#   tests/support/postgres.sh start DIR   # initdb into DIR, start on a free loopback port,
#                                         # print the server's URL (postgres://…/postgres)
#   tests/support/postgres.sh restart DIR [DOWN_SECS]
#                                         # stop it (`-m fast`: every connection is dropped), stay
#                                         # down DOWN_SECS (default 0), start it again on the same
#                                         # port with the same options; up when this returns
#   tests/support/postgres.sh stop DIR    # stop it (the folder is left for the caller to remove)
#
# With REACHD_PG_TLS set to a folder holding server.crt and server.key (PEM), `start` serves
# TLS too (`ssl=on`; clients may still connect without it).
#
# The server runs as the `postgres` system user when this runs as root (PostgreSQL refuses to
# run as root), trusts local connections (loopback only, a throwaway cluster) and keeps its
# data without fsync (tests do not survive power loss). Each test then creates its own
# database in it (see tests/common/mod.rs, tests/support/reachd_process.py,
# tests/compat/node/lib/harness.js).
set -euo pipefail

cmd=${1:?start|restart|stop}
dir=${2:?data folder}

bindir() {
    if command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return
    fi
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$found" ] || { echo "PostgreSQL is not installed (Debian package: postgresql)" >&2; exit 1; }
    echo "$found"
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

bin=$(bindir)
case "$cmd" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    chmod 700 "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    options="-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500"
    if [ -n "${REACHD_PG_TLS:-}" ]; then
        install -m 600 "$REACHD_PG_TLS/server.crt" "$REACHD_PG_TLS/server.key" "$dir/data/"
        [ "$(id -u)" = 0 ] && chown postgres "$dir/data/server.crt" "$dir/data/server.key"
        options="$options -c ssl=on"
    fi
    echo "$options" >"$dir/options"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$options" start >/dev/null
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
restart)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    sleep "${3:-0}"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "$(cat "$dir/options")" start >/dev/null
    ;;
stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
*)
    echo "usage: $0 start DIR | restart DIR [DOWN_SECS] | stop DIR" >&2
    exit 2
    ;;
esac
