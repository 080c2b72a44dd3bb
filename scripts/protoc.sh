#!/usr/bin/env bash
# protoc.sh regenerates internal/agentrpc from agent.proto. It installs what
# it needs: protoc from Debian's protobuf-compiler package, and the Go
# plugins with go install at the versions go.mod pins.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
	apt-get update && apt-get install -y protobuf-compiler
fi
bin=$(go env GOPATH)/bin
go install google.golang.org/protobuf/cmd/protoc-gen-go
go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PATH="$bin:$PATH" protoc -I internal/agentrpc -I /usr/include \
	--go_out=internal/agentrpc --go_opt=paths=source_relative \
	--go-grpc_out=internal/agentrpc --go-grpc_opt=paths=source_relative \
	internal/agentrpc/agent.proto
