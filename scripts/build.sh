#!/usr/bin/env bash
# Compiles the host (CLI and server: everything under src/, and the SDK package in sdk/src that the
# CLI uses) to JavaScript in dist/ (dist/src/cli/main.js, dist/sdk/src/index.js: the repo's layout,
# so relative imports resolve alike), so bin/kiln and the service start without a TypeScript loader.
# Skipped when the sources are unchanged since the last build (content hash in dist/.kiln-src-hash;
# bin/kiln compares its mtime with src/ and sdk/src/). The SDK's own package build is separate
# (sdk/package.json: npm run build in sdk/, which npm pack runs).
# Needs no root; scripts/install.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=dist/.kiln-src-hash
want=$( { find src sdk/src -type f -name '*.ts' -print0 | sort -z | xargs -0 sha256sum; sha256sum tsconfig.json tsconfig.build.json package-lock.json; } | sha256sum | cut -d' ' -f1)
started=$(mktemp)
trap 'rm -f "$started"' EXIT
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f dist/src/cli/main.js ]; then
  touch "$stamp"   # same content, newer mtimes (a checkout): bin/kiln must not call dist/ stale
  exit 0
fi
node node_modules/typescript/bin/tsc -p tsconfig.build.json
# The stamp carries the time the build started: a source saved during the build still reads newer.
echo "$want" > "$stamp"
touch -r "$started" "$stamp"
