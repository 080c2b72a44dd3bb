#!/usr/bin/env bash
# postgres.sh makes sure a PostgreSQL server runs on 127.0.0.1:${PGPORT:-5432}
# with a role and a database "oxide" (password "oxide"), then prints its DSN on
# stdout; everything else goes to stderr. It is idempotent: run it as often as
# you like. Typical use:
#
#	export OXIDE_TEST_POSTGRES=$(scripts/postgres.sh)
#	go test ./internal/store/...
#
# Environment: PGPORT (default 5432), OXIDE_PGDATA (the data directory, default
# /var/tmp/oxide-postgres-$PGPORT). When no PostgreSQL is installed it installs
# Debian's package with apt-get. As root it runs the server as the postgres
# user (initdb refuses root); otherwise as the current user.
set -euo pipefail

port=${PGPORT:-5432}
data=${OXIDE_PGDATA:-/var/tmp/oxide-postgres-$port}
dsn="postgres://oxide:oxide@127.0.0.1:$port/oxide?sslmode=disable"

log() { echo "postgres.sh: $*" >&2; }

# Already up and reachable with our credentials: nothing to do.
if command -v psql >/dev/null && psql "$dsn" -qAtc 'select 1' >/dev/null 2>&1; then
	echo "$dsn"
	exit 0
fi

bindir() {
	if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
		dirname "$(readlink -f "$(command -v pg_ctl)")"
		return
	fi
	ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
bin=$(bindir)
if [ -z "$bin" ]; then
	log "installing PostgreSQL with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update >&2
	apt-get install -y postgresql >&2
	bin=$(bindir)
fi
[ -x "$bin/pg_ctl" ] || { log "no pg_ctl found"; exit 1; }

# as_pg runs a command as the user that owns the cluster.
if [ "$(id -u)" = 0 ]; then
	as_pg() { runuser -u postgres -- "$@"; }
else
	as_pg() { "$@"; }
fi

if [ ! -s "$data/PG_VERSION" ]; then
	log "initdb $data"
	mkdir -p "$data"
	[ "$(id -u)" = 0 ] && chown postgres: "$data"
	chmod 700 "$data"
	as_pg "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 >&2
fi

if ! as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
	log "starting on 127.0.0.1:$port (log: $data/server.log)"
	as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
		-o "-k /tmp -c listen_addresses=127.0.0.1 -p $port -c max_connections=200" start >&2
fi

# Superuser over the Unix socket (trust) to create the role and the database.
psql_su() { as_pg "$bin/psql" -h /tmp -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_su -c "select 1 from pg_roles where rolname = 'oxide'")" != 1 ]; then
	psql_su -c "create role oxide login password 'oxide'"
fi
if [ "$(psql_su -c "select 1 from pg_database where datname = 'oxide'")" != 1 ]; then
	psql_su -c "create database oxide owner oxide"
fi

echo "$dsn"
