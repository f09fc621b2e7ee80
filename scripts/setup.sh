#!/usr/bin/env bash
# Idempotent set-up: Debian packages only when missing (apt-get update first), then npm ci
# only when node_modules is missing or older than package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the sandbox, its tests and the quick start use (checked by package, not by binary);
# python3-swift + memcached: the S3 test service (scripts/services/s3.sh).
pkgs=(crun umoci skopeo debootstrap nftables iproute2 e2fsprogs mount util-linux tar git gcc libc6-dev
      libseccomp-dev golang-github-containers-common ca-certificates apparmor docker-registry
      chromium python3-swift memcached postgresql)
need=()
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
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

# patches/ (applied by npm's postinstall, patch-package) counts too: a changed patch means a fresh install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] ||
   [ -n "$(find patches -newer node_modules/.package-lock.json 2>/dev/null)" ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

# Prebuild the CLI bundle (fast start for runners spawned per job); bin/deltaci.js ignores it when stale.
npm run -s build
