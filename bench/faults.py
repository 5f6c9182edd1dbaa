"""The fault matrix, many times: what recovery leaves behind when parts of VirtLab die.

    .venv/bin/python bench/faults.py [--runs N] [--quick | --two-hosts]

Starts a private stack (Redis with its data on disk, SQLite, uvicorn with two workers) and two
hypervisor hosts, each in a box of its own on this machine (its own libvirtd, disks and workers:
tests/faults/hosts.py): `alpha` with room for 2 VMs, `beta` for 4. Each run applies every fault of
tests/faults/scenarios.py: SIGKILL of a host worker while a session is requested, provisioning,
checkpointing, checking, reverting and destroying; libvirtd killed and restarted; Redis restarted;
a web worker killed; three starts spread over the two hosts, then `beta` lost (its learners told,
new starts on `alpha`) and back (its leftovers reaped). After each fault the reconciler runs until
the audit is clean or 150 s pass, and the audit is counted: orphaned domains and disks on any
host, sessions stuck in a transient state (or ready without a VM, a checkpoint, or terminal input).
Learner-visible problems (no clear state, no terminal, a lost verdict) are counted too.
`--quick` (under a minute) runs a few worker kills and a libvirtd restart on one host.
`--two-hosts` (~90 s) runs only the two-host case (three starts spread, `beta` lost and back): a CI
test until CI's time ran short; placement across hosts and lost hosts stay in CI without VMs
(tests/labs/test_sessions.py, tests/faults/test_lost_hosts.py). Last line:
RESULT runs=<n> orphans=<n> stuck=<n>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import scenarios
from tests.faults.drill import RECOVERY_S, Drill, Outcome, Tally, stop_all
from tests.faults.stack import fault_stack

# alpha runs 2 VMs at most, beta 4 (2 cores x LABS_TCG_VMS_PER_CPU): placement prefers beta.
SMALL, BIG = "alpha", "beta"
CAPACITY = {SMALL: "1", BIG: "2"}


def quick_matrix(drill: Drill, report: Callable[[Outcome], None]) -> list[Outcome]:
    """One host: a worker killed while provisioning, checkpointing and destroying, libvirtd restarted."""
    outcomes = [scenarios.killed_while_provisioning(drill)]
    report(outcomes[-1])
    outcomes.append(scenarios.killed_while_checkpointing(drill))
    report(outcomes[-1])
    sid = outcomes[-1].session or drill.ready_session()[1]
    outcomes.append(scenarios.libvirtd_restarted(drill, sid))
    report(outcomes[-1])
    outcomes.append(scenarios.killed_while_destroying(drill, outcomes[-1].session or sid))
    report(outcomes[-1])
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="passes (default 100 over the fault matrix, else 1)")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="one short pass on one host: < 60 s")
    modes.add_argument("--two-hosts", action="store_true", help="only the two-host case: ~90 s")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick or args.two_hosts else 100)
    t0 = time.monotonic()
    tally = Tally()

    def report(outcome: Outcome) -> None:
        tally.outcomes.append(outcome)
        print(f"[{time.monotonic() - t0:7.1f}s] {outcome}", flush=True)

    with tempfile.TemporaryDirectory(prefix="faults-") as tmp, fault_stack(Path(tmp)) as stack:
        hosts = [SMALL] if args.quick else [SMALL, BIG]
        for name in hosts:
            stack.add_host(name, LABS_TCG_VMS_PER_CPU=CAPACITY[name])
        print(f"[{time.monotonic() - t0:7.1f}s] stack up: hosts {', '.join(hosts)}", flush=True)
        drill = Drill(stack)
        for run in range(1, runs + 1):
            try:
                if args.quick:
                    quick_matrix(drill, report)
                elif args.two_hosts:
                    report(scenarios.two_hosts_spread_then_one_lost(drill, small=SMALL, big=BIG))
                else:
                    scenarios.run_matrix(drill, (SMALL, BIG), report)
            except Exception as exc:  # a case that could not even finish: count it and go on
                crashed = Outcome(f"run {run} aborted", problems=[f"{type(exc).__name__}: {exc}"])
                traceback.print_exc()
                stop_all(drill)
                crashed.audit, crashed.recovery_s = stack.settle(RECOVERY_S)
                report(crashed)
            tally.runs = run
            print(f"run {run}/{runs}: orphans {tally.orphans}, stuck {tally.stuck}, problems {tally.problems}")

    recoveries = [o.recovery_s for o in tally.outcomes]
    print(f"faults applied: {len(tally.outcomes)}; recovery median {statistics.median(recoveries):.1f}s, "
          f"max {max(recoveries):.1f}s")  # fmt: skip
    for outcome in tally.outcomes:
        if not outcome.ok:
            print(f"  not clean: {outcome}")
    print(f"learner-visible problems: {tally.problems}")
    print(f"total {time.monotonic() - t0:.1f}s")
    print(f"RESULT runs={tally.runs} orphans={tally.orphans} stuck={tally.stuck}")


if __name__ == "__main__":
    main()
