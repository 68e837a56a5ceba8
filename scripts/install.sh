#!/usr/bin/env bash
# Installs everything kiln needs on a Debian 12 host, idempotently: apt packages, npm deps, the Go
# agent, the compiled host (dist/), the language-pack images and the microVM kernel/initramfs.
# Safe to re-run; fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  bubblewrap util-linux procps kmod e2fsprogs   # namespace backend: sandboxes, mounts, process tools, workspace upper images
  golang-go                                   # builds the static guest agent
  mmdebstrap squashfs-tools debian-archive-keyring   # language-pack images from Debian packages
  qemu-system-x86 linux-image-cloud-amd64 lz4 cpio xz-utils   # qemu backend: VMM, guest kernel, initramfs
  ripgrep socat                               # bench: the sandbox-runtime peer needs them
  nftables iproute2 openssl                   # sandbox networking: kiln's firewall table, links and routes; tests' throwaway CA
  postgresql                                  # tests: the store suite also runs on a real PostgreSQL server (a private cluster per run)
)
[ "${KILN_WITH_BROWSER:-1}" = 1 ] && APT_PACKAGES+=(chromium)   # dashboard end-to-end tests

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then echo "scripts/install.sh must run as root (apt, mounts, cgroups)" >&2; exit 1; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

stamp=node_modules/.kiln-lock-hash
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  step "npm: installing dependencies"
  # npm ci refuses this lock (npm 11 leaves other platforms' optional rollup packages out of it);
  # npm install honours the lock as it is and does not rewrite it.
  npm install --no-audit --no-fund
  echo "$want" > "$stamp"
fi

step "host: compiling src/ to dist/ (skipped when unchanged)"
bash scripts/build.sh

step "agent: building build/kiln-agent"
bash agent/build.sh

step "images: building language packs (cached by definition hash)"
bin/kiln images build ${KILN_PACKS:-}

step "web: building the dashboard"
npm run --silent build:web

# The microVMs' guest kernel + initramfs are built on first use (src/vmimage, cached in the data dir).
step "done"
