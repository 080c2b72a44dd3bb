#!/usr/bin/env bash
# test.sh runs every test against real services: it makes sure PostgreSQL
# runs (scripts/postgres.sh installs and starts it when needed) and that
# busybox-static and bash-static are installed, which the Docker tests build
# their images from, and docker-registry, a real registry for the image
# pull tests (as root it installs them with apt-get; otherwise those tests
# skip), then runs go test over the whole module. Extra arguments go to go
# test.
set -euo pipefail
cd "$(dirname "$0")/.."
OXIDE_TEST_POSTGRES=$(scripts/postgres.sh)
export OXIDE_TEST_POSTGRES
if [ ! -x /bin/busybox ] || [ ! -x /bin/bash-static ] || [ ! -x /usr/bin/docker-registry ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "test.sh: installing busybox-static, bash-static and docker-registry with apt-get" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update >&2
		apt-get install -y busybox-static bash-static docker-registry >&2
	else
		echo "test.sh: no busybox-static, bash-static or docker-registry and not root: the Docker tests may skip" >&2
	fi
fi
go test "$@" ./...
