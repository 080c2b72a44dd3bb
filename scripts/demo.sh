#!/usr/bin/env bash
# demo.sh builds Oxide and runs a sample pipeline twice on the embedded
# defaults: first with the local runner (no server), then through a server
# started here with two agents (SQLite and NATS JetStream in a temporary
# data directory), following the run's logs live. Arguments: the pipeline
# (default examples/hello.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
pipeline=${1:-examples/hello.yaml}
bin=$(mktemp -d)
data=$(mktemp -d)
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$bin" "$data"' EXIT

echo "== building oxide, oxide-server and oxide-agent"
go build -o "$bin/" ./cmd/...

echo "== oxide run $pipeline (local runner)"
"$bin/oxide" run --local "$pipeline"

echo "== oxide server --agents 2, then oxide run --watch $pipeline"
port=$(( 20000 + RANDOM % 20000 ))
export OXIDE_ADMIN_TOKEN="oxt_demo-$(date +%s)-$RANDOM-token"
"$bin/oxide" server --data-dir "$data" --http-addr "127.0.0.1:$port" --grpc-addr "127.0.0.1:$((port + 1))" \
	--agents 2 --host-only --log-level warn &
server=$!
export OXIDE_SERVER="http://127.0.0.1:$port" OXIDE_TOKEN="$OXIDE_ADMIN_TOKEN"
for _ in $(seq 100); do
	"$bin/oxide" agents list >/dev/null 2>&1 && break
	sleep 0.1
done
"$bin/oxide" run --watch "$pipeline"
"$bin/oxide" agents list
