#!/usr/bin/env bash
# Test data from Debian's archive, checked by sha256: the upstream source of a real project that the
# workspace end-to-end test builds and tests in a sandbox (test/integration/workspace-project.test.ts).
# Cached under $KILN_DATA_DIR/cache/sources; nothing is fetched when it is there.
set -euo pipefail
dir="${KILN_DATA_DIR:-/var/lib/kiln}/cache/sources"
mkdir -p "$dir"
fetch() { # url sha256
  local file="$dir/${1##*/}"
  if [ -f "$file" ] && echo "$2  $file" | sha256sum -c --quiet - 2>/dev/null; then return 0; fi
  curl -fsSL --retry 3 -o "$file.part" "$1"
  echo "$2  $file.part" | sha256sum -c --quiet - || { rm -f "$file.part"; echo "checksum mismatch for $1" >&2; exit 1; }
  mv "$file.part" "$file"
}
# GNU hello 2.10: the source package "hello" of Debian 12 (and 13).
fetch http://deb.debian.org/debian/pool/main/h/hello/hello_2.10.orig.tar.gz 31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b
