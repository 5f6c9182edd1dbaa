#!/usr/bin/env bash
# The whole test suite on SQLite (the embedded default), and the database-facing tests again on
# PostgreSQL (each row of a long matrix once there: the `matrix` marker), in passes arranged to
# keep both cores busy (below). pytest's exit 5 ("no tests collected") is a failure in every pass,
# never a pass: a suite or a marker that silently selects nothing must turn CI red.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# Every real component is installed by now: a test that would skip for lack of one fails instead.
export VIRTLAB_REQUIRE_ALL=1

passed_or_exit() {  # <what> <pytest's status>: exit with that status unless it is 0
  case $2 in
    0) ;;
    5) echo "test.sh: $1: pytest collected no tests (exit 5); counted as a failure" >&2; exit 5 ;;
    *) echo "test.sh: $1: pytest failed (exit $2)" >&2; exit "$2" ;;
  esac
}

pytest_pass() {  # <what> <pytest args...>: run pytest; exit with its status unless it passed
  local what=$1 status=0
  shift
  .venv/bin/pytest "$@" || status=$?
  passed_or_exit "$what" "$status"
}

make --no-print-directory lint  # ruff check, ruff format --check, mypy, shellcheck
postgres_url=${TEST_POSTGRES_URL:-postgres://virtlab:virtlab@127.0.0.1:5432/virtlab}
if (($#)); then  # a developer's selection: one SQLite pass over exactly that
  pytest_pass "main run (SQLite)" "$@"
  exit 0
fi

# Two cores, and most tests keep one busy: a guest under TCG, or Python. So the self-contained VM
# tests (lab solves, doc blocks, guest image, the hypervisor layer, checks in a real guest: a VM at
# a time, no stack, no bound tighter than a boot shared with the other core) run in the background
# beside the tests that boot no VM (then the PostgreSQL pass); the VM tests that drive a whole
# stack (terminals, checks, classes, faults) and the tests marked `alone` (bounds on memory,
# latency or timing under a flood) run after, with the machine to themselves (an `alone` test in a
# solo path too: the background pass leaves it out).
solo_vm=(tests/labs/test_solve_labs.py tests/kb/test_runnable_blocks.py tests/guest tests/hypervisor
  tests/labs/test_verify.py)
solo_log=$(mktemp -t virtlab-solo-vm.XXXXXX)
.venv/bin/pytest "${solo_vm[@]}" -m "vm and not alone" -p no:cacheprovider --durations=15 >"$solo_log" 2>&1 &
solo_pid=$!
# A pass failing ends the script: the background tests finish first (their VMs are destroyed by
# their fixtures), and their output is shown.
trap 'wait "$solo_pid" 2>/dev/null; cat "$solo_log"; rm -f "$solo_log"' EXIT
pytest_pass "tests without a VM (SQLite)" -m "not vm and not alone" --durations=25
DATABASE_URL=$postgres_url pytest_pass "PostgreSQL pass (-m 'postgres and not matrix')" \
  -m "postgres and not matrix" -q -p no:cacheprovider
solo_status=0
wait "$solo_pid" || solo_status=$?
trap - EXIT
echo "test.sh: self-contained VM tests (run alongside; their output follows)"
cat "$solo_log"
rm -f "$solo_log"
passed_or_exit "self-contained VM tests" "$solo_status"
ignored=()
for path in "${solo_vm[@]}"; do ignored+=("--ignore=$path"); done
pytest_pass "VM tests with a stack, and tests that need the machine alone (SQLite)" -m "vm or alone" --durations=25 "${ignored[@]}"
status=0
.venv/bin/pytest "${solo_vm[@]}" -m alone -q -p no:cacheprovider || status=$?
if ((status != 5)); then  # 5: none there, as usual
  passed_or_exit "tests that need the machine alone, in the solo paths" "$status"
fi
