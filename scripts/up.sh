#!/usr/bin/env bash
# README command 1: install what is missing, then run the service in the foreground
# (127.0.0.1:8400 by default, browser links to sandbox apps on :8401; KILN_HOST, KILN_PORT,
# KILN_APPS_PORT, KILN_TOKEN, KILN_BACKEND, KILN_POOL, …).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export KILN_APPS_PORT="${KILN_APPS_PORT:-8401}"
exec bin/kiln serve
