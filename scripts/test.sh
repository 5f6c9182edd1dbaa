#!/usr/bin/env bash
# The whole test suite: SQLite (the embedded default) first, then the database-facing tests again
# on PostgreSQL (each row of a long matrix once there: the `matrix` marker). pytest's exit 5
# ("no tests collected") is a failure in both passes, never a pass: a suite or a postgres marker
# that silently selects nothing must turn CI red.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# Every real component is installed by now: a test that would skip for lack of one fails instead.
export VIRTLAB_REQUIRE_ALL=1

pytest_pass() {  # <what> <pytest args...>: run pytest; exit with its status unless it passed
  local what=$1 status=0
  shift
  .venv/bin/pytest "$@" || status=$?
  case $status in
    0) ;;
    5) echo "test.sh: $what: pytest collected no tests (exit 5); counted as a failure" >&2; exit 5 ;;
    *) echo "test.sh: $what: pytest failed (exit $status)" >&2; exit "$status" ;;
  esac
}

make --no-print-directory lint  # ruff check, ruff format --check, mypy, shellcheck
pytest_pass "main run (SQLite)" "$@"
DATABASE_URL=${TEST_POSTGRES_URL:-postgres://virtlab:virtlab@127.0.0.1:5432/virtlab} \
  pytest_pass "PostgreSQL pass (-m 'postgres and not matrix')" -m "postgres and not matrix" -q -p no:cacheprovider
