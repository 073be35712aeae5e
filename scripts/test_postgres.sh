#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, on 127.0.0.1 only (Debian's `postgresql` package).
#
#   eval "$(bash scripts/test_postgres.sh start)"   # installs it if needed (as root), starts it,
#                                                    # prints `export COREA_TEST_PG_URL=...`
#   bash scripts/test_postgres.sh stop               # stops it and removes its data folder
#   bash scripts/test_postgres.sh pause|resume       # stop / start it keeping its data (fault tests)
#
# The cluster lives in $COREA_PG_DIR (default /tmp/corea-test-pg) and listens on $COREA_PG_PORT
# (default 54329), with password authentication for the role `corea` (database `corea_test`,
# allowed to create the per-test databases). The tests that use it skip when COREA_TEST_PG_URL is
# unset, so a machine without PostgreSQL still passes the suite.
set -euo pipefail
DIR=${COREA_PG_DIR:-/tmp/corea-test-pg}
PORT=${COREA_PG_PORT:-54329}
PASSWORD=${COREA_PG_PASSWORD:-corea-test-pw}

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$d" ] && echo "$d"
}

as_owner() {  # PostgreSQL refuses to run as root: run its tools as the `postgres` user then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-start}" in
start)
  if [ -z "$(bindir)" ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    else
      echo "PostgreSQL is missing: apt-get install postgresql (as root)" >&2
      exit 1
    fi
  fi
  BIN=$(bindir)
  if ! as_owner "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then
    rm -rf "$DIR"
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
    pw=$(mktemp)
    echo "$PASSWORD" >"$pw"
    chmod 644 "$pw"
    as_owner "$BIN/initdb" -D "$DIR/data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 --pwfile="$pw" -E UTF8 >"$DIR/initdb.log" 2>&1 \
      || { cat "$DIR/initdb.log" >&2; exit 1; }
    rm -f "$pw"
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=200 -c fsync=off" \
      start >&2 || { cat "$DIR/server.log" >&2; exit 1; }
    as_owner "$BIN/psql" -q -h "$DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -c "CREATE ROLE corea LOGIN CREATEDB PASSWORD '$PASSWORD'" \
      -c "CREATE DATABASE corea_test OWNER corea" >&2
  fi
  echo "export COREA_TEST_PG_URL='postgresql+psycopg://corea:$PASSWORD@127.0.0.1:$PORT/corea_test'"
  ;;
pause)  # stop the server but keep its data (the fault tests: "the database went away")
  as_owner "$(bindir)/pg_ctl" -D "$DIR/data" -m immediate -w stop >&2
  ;;
resume)
  as_owner "$(bindir)/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=200 -c fsync=off" \
    start >&2
  ;;
stop)
  BIN=$(bindir)
  if [ -n "$BIN" ] && [ -d "$DIR/data" ]; then
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >&2 || true
  fi
  rm -rf "$DIR"
  ;;
*)
  echo "usage: $0 start|stop|pause|resume" >&2
  exit 2
  ;;
esac
