#!/usr/bin/env bash
# Install PostgreSQL from Debian's packages, start a private cluster on loopback and create the
# role + database the tests use for the DuckLake catalog. Run as root by .ci/run; idempotent
# (a second run reuses the cluster, the role and the database).
#
# Exports TRADELOOP_TEST_PG_URL into .ci/env: with it set, the warehouse and collection tests
# run on the PostgreSQL catalog as well as on SQLite (they fail, never skip, if it is unusable).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_PORT="${TRADELOOP_CI_PG_PORT:-54329}"
PG_DATA="${TRADELOOP_CI_PG_DATA:-/var/lib/tradeloop-ci-pg}"
PG_SOCKET_DIR="$PG_DATA-socket"
PG_ROLE=tradeloop
PG_PASSWORD=tradeloop-ci     # a throwaway password for a loopback-only CI cluster
PG_DB=tradeloop

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing postgresql from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
fi
PG_BIN="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")"
echo "postgresql binaries: $PG_BIN"

as_postgres() { runuser -u postgres -- "$@"; }

mkdir -p "$PG_DATA" "$PG_SOCKET_DIR"
chown postgres:postgres "$PG_DATA" "$PG_SOCKET_DIR"
chmod 700 "$PG_DATA"

if [ ! -f "$PG_DATA/PG_VERSION" ]; then
  as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
fi

if ! as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_SOCKET_DIR -c max_connections=200 -c fsync=off"
fi
"$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -t 30

psql_admin() {
  as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -d postgres "$@"
}
# The role may create databases: every warehouse test gets a fresh database of its own.
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE'")" != "1" ]; then
  psql_admin -c "CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
else
  psql_admin -c "ALTER ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
fi
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != "1" ]; then
  psql_admin -c "CREATE DATABASE $PG_DB OWNER $PG_ROLE"
fi

URL="postgresql://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
PGPASSWORD="$PG_PASSWORD" psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_ROLE" -d "$PG_DB" \
  -c "SELECT 1" >/dev/null
touch .ci/env
grep -v '^TRADELOOP_TEST_PG_URL=' .ci/env > .ci/env.tmp || true
mv .ci/env.tmp .ci/env
echo "TRADELOOP_TEST_PG_URL=$URL" >> .ci/env
echo "PostgreSQL ready on 127.0.0.1:$PG_PORT (TRADELOOP_TEST_PG_URL in .ci/env)"
