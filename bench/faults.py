"""The fault matrix, many times: what recovery leaves behind when parts of VirtLab die.

    .venv/bin/python bench/faults.py [--runs N] [--lanes K] [--quick | --two-hosts]

Starts a private stack (Redis with its data on disk, SQLite, uvicorn with two workers) and two
hypervisor hosts, each in a box of its own on this machine (its own libvirtd, disks and workers:
tests/faults/hosts.py): `alpha` with room for 2 VMs, `beta` for 4. Each run applies every fault of
tests/faults/scenarios.py and service_faults.py: SIGKILL of a host worker while a session is
requested, provisioning, checkpointing, checking, reverting and destroying; libvirtd killed and
restarted; Redis restarted; a web worker killed; three starts spread over the two hosts, then
`beta` lost (its learners told, new starts on `alpha`) and back (its leftovers reaped). After each
fault the reconciler runs until the audit is clean or 150 s pass, and the audit is counted:
orphaned domains and disks on any host, sessions stuck in a transient state (or ready without a
VM, a checkpoint, or terminal input). Learner-visible problems (no clear state, no terminal, a lost
verdict) are counted too.

`--lanes K` runs K such stacks at once, each in a process of its own with its own Redis, web
server and two host boxes, and shares the runs among them. A pass spends most of its time waiting
(adverts expiring, reconciler rounds, workers restarting: the machine was ~70 % idle through a
single lane), so the default of 4 lanes does 100 passes in about a third of the time one lane
takes; every fault still hits exactly one lane's stack. Each lane's log goes to a file of its own.
`--quick` (under a minute) runs a few worker kills and a libvirtd restart on one host.
`--two-hosts` (~90 s) runs only the two-host case (three starts spread, `beta` lost and back): a CI
test until CI's time ran short; placement across hosts and lost hosts stay in CI without VMs
(tests/labs/test_sessions.py, tests/faults/test_lost_hosts.py). Last line:
RESULT runs=<n> orphans=<n> stuck=<n>
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import scenarios, service_faults
from tests.faults.drill import RECOVERY_S, Drill, Outcome, Tally, stop_all
from tests.faults.stack import fault_stack

# alpha runs 2 VMs at most, beta 4 (2 cores x LABS_TCG_VMS_PER_CPU): placement prefers beta.
SMALL, BIG = "alpha", "beta"
CAPACITY = {SMALL: "1", BIG: "2"}
LANES = 4  # stacks at once for the full matrix (~28 % of 2 cores busy per lane)


@dataclass
class Summary:
    """What the RESULT line and the report before it are made of, from one lane or all of them."""

    runs: int = 0
    orphans: int = 0
    stuck: int = 0
    problems: int = 0
    recoveries: list[float] = field(default_factory=list)
    not_clean: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, tally: Tally) -> Summary:
        return cls(
            tally.runs, tally.orphans, tally.stuck, tally.problems,
            [o.recovery_s for o in tally.outcomes], [str(o) for o in tally.outcomes if not o.ok],
        )  # fmt: skip

    def add(self, other: Summary) -> None:
        self.runs += other.runs
        self.orphans += other.orphans
        self.stuck += other.stuck
        self.problems += other.problems
        self.recoveries += other.recoveries
        self.not_clean += other.not_clean

    def print_report(self, seconds: float) -> None:
        if self.recoveries:
            print(f"faults applied: {len(self.recoveries)}; recovery median "
                  f"{statistics.median(self.recoveries):.1f}s, max {max(self.recoveries):.1f}s")  # fmt: skip
        for line in self.not_clean:
            print(f"  not clean: {line}")
        print(f"learner-visible problems: {self.problems}")
        print(f"total {seconds:.1f}s")
        print(f"RESULT runs={self.runs} orphans={self.orphans} stuck={self.stuck}")


def quick_matrix(drill: Drill, report: Callable[[Outcome], None]) -> list[Outcome]:
    """One host: a worker killed while provisioning, checkpointing and destroying, libvirtd restarted."""
    outcomes = [scenarios.killed_while_provisioning(drill)]
    report(outcomes[-1])
    outcomes.append(scenarios.killed_while_checkpointing(drill))
    report(outcomes[-1])
    sid = outcomes[-1].session or drill.ready_session()[1]
    outcomes.append(service_faults.libvirtd_restarted(drill, sid))
    report(outcomes[-1])
    outcomes.append(scenarios.killed_while_destroying(drill, outcomes[-1].session or sid))
    report(outcomes[-1])
    return outcomes


def run_lane(args: argparse.Namespace, runs: int, t0: float) -> Summary:
    """`runs` passes on one stack of this process's own."""
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
            print(f"run {run}/{runs}: orphans {tally.orphans}, stuck {tally.stuck}, problems {tally.problems}",
                  flush=True)  # fmt: skip
    return Summary.of(tally)


def run_lanes(args: argparse.Namespace, runs: int, lanes: int, t0: float) -> Summary:
    """Share `runs` among `lanes` processes of this script, each with its own stack; add up
    their summaries. A lane's output is echoed with its number; its log (stderr) goes to a file."""
    logs = Path(tempfile.mkdtemp(prefix="faults-lanes-"))
    print(f"{lanes} lanes; their logs: {logs}/lane-<n>.log", flush=True)
    shares = [runs // lanes + (1 if i < runs % lanes else 0) for i in range(lanes)]
    total = Summary()
    lock = threading.Lock()

    def lane(number: int, share: int) -> None:
        summary_file = logs / f"lane-{number}.json"
        argv = [sys.executable, __file__, "--runs", str(share), "--lanes", "1", "--summary-file", str(summary_file)]
        argv += ["--quick"] if args.quick else ["--two-hosts"] if args.two_hosts else []
        with open(logs / f"lane-{number}.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
            # Echoed by a thread of its own: a server the lane left behind may hold the pipe open.
            echo = threading.Thread(target=_echo, args=(proc, f"lane {number}: "), daemon=True)
            echo.start()
            code = proc.wait()
            echo.join(5)
        with lock:
            if summary_file.exists():
                total.add(Summary(**json.loads(summary_file.read_text())))
            else:  # the lane died before its summary: its runs are not counted
                total.not_clean.append(f"lane {number} exited {code} without a summary (see its log)")
                total.problems += 1

    threads = [threading.Thread(target=lane, args=(n + 1, share)) for n, share in enumerate(shares) if share]
    for i, thread in enumerate(threads):
        thread.start()
        if i + 1 < len(threads):
            time.sleep(20)  # stagger the stacks' start-ups (each boots a template first)
    for thread in threads:
        thread.join()
    return total


def _echo(proc: subprocess.Popen[str], prefix: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        print(prefix + line, end="", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="passes (default 100 over the fault matrix, else 1)")
    parser.add_argument("--lanes", type=int, help=f"stacks at once (default {LANES} for the full matrix, else 1)")
    parser.add_argument("--summary-file", type=Path, help=argparse.SUPPRESS)  # where a lane leaves its counts
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="one short pass on one host: < 60 s")
    modes.add_argument("--two-hosts", action="store_true", help="only the two-host case: ~90 s")
    args = parser.parse_args()
    single = args.quick or args.two_hosts
    runs = args.runs or (1 if single else 100)
    lanes = max(1, min(args.lanes or (1 if single else LANES), runs))
    t0 = time.monotonic()
    summary = run_lanes(args, runs, lanes, t0) if lanes > 1 else run_lane(args, runs, t0)
    if args.summary_file:
        args.summary_file.write_text(json.dumps(asdict(summary)))
        return
    summary.print_report(time.monotonic() - t0)


if __name__ == "__main__":
    main()
