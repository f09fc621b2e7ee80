#!/usr/bin/env bash
# The whole test suite: starts the services the tests need (scripts/test-services.sh), runs every
# *.test.ts with node's test runner one file at a time, then the HTTP-level server suite again on
# PostgreSQL (DELTACI_TEST_STORE=postgres), and stops the services whatever happens.
set -uo pipefail
cd "$(dirname "$0")/.."
env_lines=$(bash scripts/test-services.sh start) || { echo "test: services failed to start" >&2; exit 1; }
while IFS= read -r line; do [ -n "$line" ] && export "${line?}"; done <<<"$env_lines"
trap 'bash scripts/test-services.sh stop "$DELTACI_SERVICES_STATE"' EXIT
node --import tsx --test --test-concurrency=1 $(find src test -name '*.test.ts' | sort)
rc=$?
# The HTTP-level server suite (every test file on test/server-harness.ts's startTestServer or startBlobServer) once
# more, on PostgreSQL: the harness gives each server a fresh database of the test cluster.
DELTACI_TEST_STORE=postgres node --import tsx --test --test-concurrency=1 $(grep -l -e 'startTestServer' -e 'startBlobServer' test/*.test.ts | sort) || rc=1
exit $rc
