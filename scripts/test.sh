#!/usr/bin/env bash
# test.sh runs every test against real services: it makes sure PostgreSQL
# runs (scripts/postgres.sh installs and starts it when needed), then runs
# go test over the whole module. Extra arguments go to go test.
set -euo pipefail
cd "$(dirname "$0")/.."
OXIDE_TEST_POSTGRES=$(scripts/postgres.sh)
export OXIDE_TEST_POSTGRES
go test "$@" ./...
