#!/usr/bin/env bash
# The whole test suite: SQLite (the embedded default) first, then the database-facing tests again
# on PostgreSQL. pytest's exit 5 ("no tests collected") is not a pass for the main run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
.venv/bin/ruff check .
.venv/bin/pytest "$@"
DATABASE_URL=${TEST_POSTGRES_URL:-postgres://virtlab:virtlab@127.0.0.1:5432/virtlab} \
  .venv/bin/pytest -m postgres -q -p no:cacheprovider
