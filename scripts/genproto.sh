#!/usr/bin/env bash
# Regenerates protocol/pb from protocol/cohort.proto.
# Needs protoc (Debian: protobuf-compiler) and protoc-gen-go at the version
# pinned below (the same as google.golang.org/protobuf in go.mod).
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOC_GEN_GO_VERSION=v1.36.12
bin="$(go env GOPATH)/bin"
if ! "$bin/protoc-gen-go" --version 2>/dev/null | grep -q "${PROTOC_GEN_GO_VERSION}"; then
  GOFLAGS= go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
fi
mkdir -p protocol/pb
PATH="$bin:$PATH" protoc --proto_path=protocol \
  --go_out=protocol/pb --go_opt=paths=source_relative \
  protocol/cohort.proto
