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

# Background passes: pytest in the background, its output kept in a file and shown once waited for.
bg_pids=() bg_logs=() bg_names=()
background() {  # <what> <pytest args...>
  local log
  log=$(mktemp -t virtlab-tests.XXXXXX)
  .venv/bin/pytest "${@:2}" -p no:cacheprovider --durations=15 >"$log" 2>&1 &
  bg_pids+=("$!") bg_logs+=("$log") bg_names+=("$1")
}
await_background() {  # every background pass finished and shown; exit as the first that failed did
  local i status failed_status=0 failed_name=""
  for i in "${!bg_pids[@]}"; do
    status=0
    wait "${bg_pids[i]}" || status=$?
    echo "test.sh: ${bg_names[i]} (run in the background; its output follows)"
    cat "${bg_logs[i]}"
    rm -f "${bg_logs[i]}"
    if ((status != 0)) && [[ -z $failed_name ]]; then failed_status=$status failed_name=${bg_names[i]}; fi
  done
  bg_pids=() bg_logs=() bg_names=()
  if [[ -n $failed_name ]]; then passed_or_exit "$failed_name" "$failed_status"; fi
}
# A foreground pass failing ends the script: the background ones finish first (their VMs are
# destroyed by their fixtures), and their output is shown.
trap 'for i in "${!bg_pids[@]}"; do wait "${bg_pids[i]}" 2>/dev/null; cat "${bg_logs[i]}"; rm -f "${bg_logs[i]}"; done' EXIT

# Two cores, and most tests keep one busy: a guest under TCG, or Python. Three phases:
# 1. the self-contained VM tests (lab solves, doc blocks, guest image, the hypervisor layer, checks
#    in a real guest: a VM at a time, no stack) in the background, beside the tests that boot no VM
#    and then the PostgreSQL pass;
# 2. the VM tests that drive a whole stack (uvicorn, Celery, Chromium), in two lanes at once;
# 3. with the machine to themselves: the tests marked `alone` (bounds on memory, latency or timing
#    under a flood, wherever they are), the fault drills, and any VM test in no list above.
# Nothing in phases 1 and 2 is timed tighter than a boot shared with the other lane.
solo_vm=(tests/labs/test_solve_labs.py tests/kb/test_runnable_blocks.py tests/guest tests/hypervisor
  tests/labs/test_verify.py tests/labs/test_cpu_hogs.py tests/labs/test_console_relay.py)
lane_a=(tests/labs/test_e2e.py tests/labs/test_reconciler.py tests/labs/test_reservations.py
  tests/labs/test_sessions_pool.py tests/labs/test_check_budget.py tests/classes/test_e2e.py)
lane_b=(tests/browser tests/classes/test_live.py tests/labs/test_timeline.py tests/portal/test_run.py)

background "self-contained VM tests" "${solo_vm[@]}" -m "vm and not alone"
pytest_pass "tests without a VM (SQLite)" -m "not vm and not alone" --durations=25
DATABASE_URL=$postgres_url pytest_pass "PostgreSQL pass (-m 'postgres and not matrix')" \
  -m "postgres and not matrix" -q -p no:cacheprovider
await_background

background "VM tests with a stack, lane A" "${lane_a[@]}" -m "vm and not alone"
pytest_pass "VM tests with a stack, lane B" "${lane_b[@]}" -m "vm and not alone" --durations=15
await_background

listed=("${solo_vm[@]}" "${lane_a[@]}" "${lane_b[@]}")
ignored=()
for path in "${listed[@]}"; do ignored+=("--ignore=$path"); done
pytest_pass "tests that need the machine alone, and the other VM tests (SQLite)" -m "vm or alone" --durations=25 \
  "${ignored[@]}"
status=0
.venv/bin/pytest "${listed[@]}" -m alone -q -p no:cacheprovider || status=$?
if ((status != 5)); then  # 5: none there, as usual
  passed_or_exit "tests that need the machine alone, in the listed paths" "$status"
fi
