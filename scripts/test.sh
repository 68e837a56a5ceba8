#!/usr/bin/env bash
# README command 2: install what is missing, then run the whole test suite (Go agent + TypeScript:
# unit, integration against real bubblewrap/QEMU/images, Firecracker API conformance, dashboard).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
bash scripts/fetch-test-sources.sh || exit 1

fail=0
printf '\n==> go test (agent)\n' >&2
(cd agent && go test -count=1 ./...) || fail=1

printf '\n==> gofmt, go vet (agent)\n' >&2
unformatted=$(cd agent && gofmt -l .)
if [ -n "$unformatted" ]; then printf 'gofmt: not formatted (run gofmt -w in agent/):\n%s\n' "$unformatted" >&2; fail=1; fi
(cd agent && go vet ./...) || fail=1

printf '\n==> typecheck\n' >&2
npx tsc -p tsconfig.json --noEmit || fail=1
npx tsc -p web/tsconfig.json --noEmit || fail=1
npx tsc -p sdk/tsconfig.json --noEmit || fail=1   # the SDK package alone: no Node types, as browsers see it

printf '\n==> dependency rules (.dependency-cruiser.cjs)\n' >&2
npx depcruise --config .dependency-cruiser.cjs src web/src sdk/src || fail=1

printf '\n==> lint and format (biome.json; fix with: npx biome check --write .)\n' >&2
npx biome ci --colors=off . || fail=1

printf '\n==> node tests\n' >&2
shopt -s nullglob
files=(test/unit/*.test.ts test/images/*.test.ts test/firecracker/*.test.ts test/integration/*.test.ts test/qemu/*.test.ts test/web/*.test.ts)
node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}" || fail=1

if [ $fail -ne 0 ]; then echo "kiln tests: FAILED" >&2; else echo "kiln tests: all passed" >&2; fi
exit $fail
