#!/usr/bin/env bash
# A PostgreSQL server of the project's own, for tests and benchmarks: Debian's packages, a data
# directory under /tmp, a loopback port and a Unix socket in /tmp.
# Usage: scripts/pg.sh start|stop|url|socket-url [PORT]
# url: over TCP (127.0.0.1:PORT); socket-url: over the Unix socket (/tmp/.s.PGSQL.PORT), what a hotline on
# the same host as its PostgreSQL connects with (about half the kernel time a round trip: README "Performance").
# It installs the postgresql package when missing (as root). Prints nothing but errors, except the URLs.
set -euo pipefail
cmd=${1:-start}
port=${2:-${IVR_PG_PORT:-54329}}
data=/tmp/ivr-pg-$port
url="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
socket_url="postgresql+psycopg://postgres@/postgres?host=/tmp&port=$port"

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "$cmd" in
  start)
    if [ -z "$(bindir)" ]; then
      [ "$(id -u)" = 0 ] || { echo "PostgreSQL is not installed: apt-get install postgresql (as root)" >&2; exit 1; }
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null
    fi
    bin=$(bindir)
    if [ ! -f "$data/PG_VERSION" ]; then
      mkdir -p "$data"
      [ "$(id -u)" = 0 ] && chown postgres:postgres "$data"
      as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    if ! as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
        -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=300" start >/dev/null
    fi
    ;;
  stop)
    bin=$(bindir)
    [ -n "$bin" ] && [ -f "$data/PG_VERSION" ] && as_postgres "$bin/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true
    ;;
  url)
    echo "$url"
    ;;
  socket-url)
    echo "$socket_url"
    ;;
  *)
    echo "usage: scripts/pg.sh start|stop|url|socket-url [PORT]" >&2; exit 2;;
esac
