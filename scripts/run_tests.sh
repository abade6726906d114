#!/usr/bin/env bash
# Run the test suite against real PostgreSQL and Redis servers.
#
# With TEST_DATABASE_URL and TEST_REDIS_URL both set, those servers are used as they are. Otherwise a
# throwaway pair is started in a fresh temp dir (scripts/testservices.py) and always stopped on exit.
# Arguments go to pytest. Exits with pytest's status; "no tests collected" (5) is reported as a failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "run_tests: $PY not found; run 'make venv' first" >&2
    exit 2
fi

run_pytest() {
    "$PY" -m pytest "$@"
    local rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "run_tests: FAILED: pytest collected no tests (exit 5)" >&2
    fi
    return "$rc"
}

if [ -n "${TEST_DATABASE_URL:-}" ] && [ -n "${TEST_REDIS_URL:-}" ]; then
    run_pytest "$@"
    exit $?
fi

SERVICES_DIR=$(mktemp -d /tmp/schoolhouse-tests.XXXXXX) || exit 1
cleanup() {
    "$PY" scripts/testservices.py stop --dir "$SERVICES_DIR" || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! "$PY" scripts/testservices.py start --dir "$SERVICES_DIR" >/dev/null; then
    echo "run_tests: could not start PostgreSQL and Redis for the tests (see above)" >&2
    exit 1
fi
set -a
# shellcheck disable=SC1091
. "$SERVICES_DIR/env"
set +a
echo "run_tests: TEST_DATABASE_URL=$TEST_DATABASE_URL TEST_REDIS_URL=$TEST_REDIS_URL" >&2

run_pytest "$@"
exit $?
