#!/usr/bin/env bash
# Builds the Debian test image for the oci sandbox: debootstrap (minbase) into an OCI layout with
# umoci, cached. Usage: scripts/sandbox-build-debian-image.sh [LAYOUT_DIR] [SUITE]
# Prints "<layout>:<tag> <manifest digest>" on success. Re-running with the layout present is a no-op.
set -euo pipefail
LAYOUT="${1:-/var/cache/deltaci/images/debian}"
SUITE="${2:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TAG="$SUITE"

digest_of() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]+"/index.json")); print(next(m["digest"] for m in d["manifests"] if m.get("annotations",{}).get("org.opencontainers.image.ref.name")==sys.argv[2]))' "$1" "$2"; }

if [ -f "$LAYOUT/index.json" ] && digest_of "$LAYOUT" "$TAG" >/dev/null 2>&1; then
  echo "$LAYOUT:$TAG $(digest_of "$LAYOUT" "$TAG")"
  exit 0
fi
for tool in debootstrap umoci python3; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 3; }; done

mkdir -p "$(dirname "$LAYOUT")"
WORK="$(mktemp -d "$(dirname "$LAYOUT")/.build-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# apt's package cache of the host, when it has the packages, saves most of the download
CACHE_ARGS=()
[ -d /var/cache/apt/archives ] && CACHE_ARGS=(--cache-dir=/var/cache/apt/archives)
echo "debootstrap $SUITE from $MIRROR (minbase)..." >&2
debootstrap --variant=minbase "${CACHE_ARGS[@]}" "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
  tail -30 "$WORK/debootstrap.log" >&2
  exit 1
}
# no caches or logs of the build inside the image
rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"* "$WORK/rootfs/var/log/"*
umoci init --layout "$WORK/layout"
umoci new --image "$WORK/layout:$TAG"
umoci unpack --image "$WORK/layout:$TAG" "$WORK/bundle" >/dev/null
cp -a "$WORK/rootfs/." "$WORK/bundle/rootfs/"
umoci repack --image "$WORK/layout:$TAG" "$WORK/bundle"
umoci config --image "$WORK/layout:$TAG" --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" --config.workingdir / \
  --config.user 0:0 --config.label "org.deltaci.image=debian-$SUITE"
umoci gc --layout "$WORK/layout"
rm -rf "$LAYOUT"
mv "$WORK/layout" "$LAYOUT"
echo "$LAYOUT:$TAG $(digest_of "$LAYOUT" "$TAG")"
