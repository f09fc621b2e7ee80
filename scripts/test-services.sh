#!/usr/bin/env bash
# Start or stop the services the tests and benches need (each one is scripts/services/NAME.sh).
#   start: starts every service and prints, as KEY=value lines, the env the tests read
#          (DELTACI_TEST_DATABASE_URL, DELTACI_TEST_S3_ENDPOINT, ...) plus DELTACI_SERVICES_STATE,
#          the file that `stop` needs.
#   stop [STATE_FILE]: stops every service started by that `start` and removes its files.
# Each service script takes `start STATE_DIR` (prints KEY=value lines) and `stop STATE_DIR`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
case "${1:-}" in
  start)
    state=$(mktemp -d /tmp/deltaci-services-XXXXXX)
    chmod 755 "$state"
    for svc in "$here"/services/*.sh; do
      [ -e "$svc" ] || continue
      name=$(basename "$svc" .sh)
      mkdir -p "$state/$name"
      if ! bash "$svc" start "$state/$name" >"$state/$name.env"; then
        echo "test-services: $name failed to start (see $state/$name)" >&2
        "$0" stop "$state" >&2 || true
        exit 1
      fi
      cat "$state/$name.env"
    done
    echo "DELTACI_SERVICES_STATE=$state" ;;
  stop)
    state=${2:-${DELTACI_SERVICES_STATE:-}}
    [ -n "$state" ] || { echo "test-services: stop needs the state dir (DELTACI_SERVICES_STATE)" >&2; exit 2; }
    [ -d "$state" ] || exit 0
    for svc in "$here"/services/*.sh; do
      [ -e "$svc" ] || continue
      name=$(basename "$svc" .sh)
      [ -d "$state/$name" ] && bash "$svc" stop "$state/$name" || true
    done
    rm -rf "$state" ;;
  *) echo "usage: $0 start | stop [STATE_DIR]" >&2; exit 2 ;;
esac
