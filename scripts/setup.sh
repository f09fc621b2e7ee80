#!/usr/bin/env bash
# Idempotent set-up: Debian packages only when missing (apt-get update first), then npm ci
# only when node_modules is missing or older than package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in crun:crun umoci:umoci debootstrap:debootstrap nft:nftables ip:iproute2 mkfs.ext4:e2fsprogs losetup:mount tar:tar git:git; do
  bin=${pair%%:*}; pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (${need[*]}); run as root or: sudo apt-get install ${need[*]}" >&2
  fi
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

# Prebuild the CLI bundle (fast start for runners spawned per job); bin/deltaci.js ignores it when stale.
npm run -s build
