#!/bin/sh
# Builds the static kiln-agent binary into <repo>/build/kiln-agent. Idempotent; go caches.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../build"
mkdir -p "$out"
cd "$here"
CGO_ENABLED=0 GOPROXY=off go build -trimpath -ldflags '-s -w' -o "$out/kiln-agent" .
