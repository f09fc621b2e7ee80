#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benches (Debian's `postgresql`), loopback only.
#   start STATE_DIR: initdb + start in STATE_DIR/cluster; prints DELTACI_TEST_DATABASE_URL=...
#   stop STATE_DIR:  stops it (immediate) and removes the cluster.
# As root the cluster runs as the `postgres` user (initdb refuses root), so STATE_DIR and its
# parents must be traversable by that user. Trust auth on 127.0.0.1, fsync off: tests only.
set -euo pipefail
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$BIN" ] || { echo "postgres.sh: postgresql is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
state=${2:?usage: $0 start|stop STATE_DIR}
data="$state/cluster"
case "${1:-}" in
  start)
    mkdir -p "$data"
    chmod 755 "$state"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$data"
    port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
    cd /   # initdb must not start in a directory the cluster's owner cannot read
    as_owner "$BIN/initdb" -D "$data/db" -U deltaci --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$state/initdb.log" 2>&1
    # max_connections: two replicas per test, each a pool plus a LISTEN connection, several tests at once.
    as_owner "$BIN/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
      start >/dev/null
    echo "DELTACI_TEST_DATABASE_URL=postgres://deltaci@127.0.0.1:$port/postgres" ;;
  stop)
    [ -d "$data/db" ] && as_owner "$BIN/pg_ctl" -D "$data/db" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$data" ;;
  *) echo "usage: $0 start|stop STATE_DIR" >&2; exit 2 ;;
esac
