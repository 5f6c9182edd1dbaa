"""What bench/isolation.py measures beside the learners' own timings: the web server's processes and
their resident memory, Redis's memory (`Sampler`, once a second), and the CPU each role on the
machine uses (`CpuByRole`: the abuser's QEMU and client told apart from the learners' and the bench),
over a phase or any 10 s window of it."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path

import redis

from tests.processes import descendants

MIB = 1024 * 1024


def web_pids(base: str) -> set[int]:
    """The uvicorn process serving `base` and every process below it (its workers)."""
    parent = uvicorn_pid(base)
    return {parent, *descendants(parent)}


def uvicorn_pid(base: str) -> int:
    """The uvicorn process listening for `base` (with workers: their supervisor)."""
    port = base.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"uvicorn" in a for a in argv[:2]) and b"--port" in argv and port.encode() in argv:
            return int(entry.name)
    raise RuntimeError(f"no uvicorn process on port {port}")


def rss_mib(pids: set[int]) -> float:
    """The processes' resident memory, summed."""
    total = 0.0
    for pid in pids:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        total += next(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:"))
    return total


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuByRole:
    """CPU seconds used, summed by what each process is to the run (the abuser's QEMU, the learners'
    QEMUs, the web process, the host's workers...). Processes are looked at every second, so one
    that ends (the abuser's VM, stopped at its disk budget) keeps what it used."""

    def __init__(self, web: set[int], abuser_vm: str, abuser_client: int):
        self.web, self.abuser_vm, self.abuser_client = web, abuser_vm, abuser_client
        self.last: dict[int, tuple[str, float]] = {}
        self.history: list[tuple[float, dict[str, float]]] = []  # (time.time(), totals) every second
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def look(self) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                argv = (entry / "cmdline").read_bytes()
                used = cpu_s(pid)
            except (OSError, ValueError):  # gone meanwhile
                continue
            with self._lock:
                known = self.last.get(pid)
                role = known[0] if known else _role(pid, argv, self.web, self.abuser_vm, self.abuser_client)
                self.last[pid] = (role, used)

    def totals(self) -> dict[str, float]:
        self.look()
        sums: defaultdict[str, float] = defaultdict(float)
        with self._lock:
            for role, used in self.last.values():
                sums[role] += used
        return dict(sums)

    def cores(self, start: float, end: float) -> dict[str, float]:
        """Cores each role used between two moments (time.time(), as the learners' marks; the
        samples nearest them)."""
        inside = [(at, sums) for at, sums in self.history if start - 0.5 <= at <= end + 0.5]
        if len(inside) < 2:
            return {}
        (t0, first), (t1, last) = inside[0], inside[-1]
        return {role: (used - first.get(role, 0.0)) / (t1 - t0) for role, used in last.items()}

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.history.append((time.time(), self.totals()))

    def __enter__(self) -> CpuByRole:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _role(pid: int, argv: bytes, web: set[int], abuser_vm: str, abuser_client: int) -> str:
    if b"qemu-system" in argv:
        return "abuser's QEMU" if f"guest={abuser_vm},".encode() in argv else "learners' QEMUs"
    if pid in web:
        return "web"
    if pid == abuser_client:
        return "abuser's client"
    for needle, role in ((b"celery", "host workers"), (b"redis-server", "redis"), (b"libvirtd", "libvirtd"),
                         (b"bench/isolation.py", "bench (learners' clients)")):  # fmt: skip
        if needle in argv:
            return role
    try:
        return f"other: {Path(f'/proc/{pid}/comm').read_text().strip()}"
    except OSError:
        return "other"


def redis_mib(client: redis.Redis) -> float:
    return int(client.info("memory")["used_memory"]) / MIB


class Sampler:
    """Redis memory and web RSS once a second, in a thread."""

    def __init__(self, redis_url: str, web_pids: set[int]):
        self.client, self.web_pids = redis.Redis.from_url(redis_url), web_pids
        self.baseline = (0.0, 0.0)
        self.redis: list[float] = []
        self.web: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[float, float]:
        return redis_mib(self.client), rss_mib(self.web_pids)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            r, w = self.sample()
            self.redis.append(r)
            self.web.append(w)

    def __enter__(self) -> Sampler:
        self.baseline = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        r, w = self.sample()  # after the abuse and a few seconds of settling
        self.redis.append(r)
        self.web.append(w)
