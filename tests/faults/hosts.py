"""Hypervisor hosts of their own on this machine, for the fault suite.

A `HostBox` is what a second machine would be: a private mount namespace in which libvirt's
state, configuration and sockets (/run/libvirt, /etc/libvirt, /var/lib/libvirt, ...) and VirtLab's
disk directory are private directories, served by a libvirtd and virtlogd of its own. Its host agent
runs inside the namespace and sees exactly what an agent on another machine would (qemu:///system,
/var/lib/virtlab/disks); the test reaches that libvirtd through its socket. So libvirtd can be
killed and restarted, and a host lost, without touching the machine's own libvirtd or anyone
else's VMs, and two hosts' reconcilers never see (or reap) each other's domains and disks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from labs import task_calls
from labs.hypervisor import DomainMissing, Hypervisor, HypervisorError
from labs.hypervisor.disks import DEFAULT_DISKS_ROOT, list_disk_sessions
from labs.redis_names import ADVERT_PREFIX
from tests import servers
from tests.processes import kill_process_tree, stop_process

Popen = subprocess.Popen[bytes]
# Private directory (under the box's root) -> where the namespace mounts it.
PRIVATE_MOUNTS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "etc": "/etc/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
    "disks": str(DEFAULT_DISKS_ROOT),
}


@dataclass(frozen=True)
class HostDomain:
    """A VirtLab domain on a box's libvirtd."""

    session_id: str
    active: bool


class HostBox:
    """A simulated hypervisor host: its own libvirtd in its own mount namespace, and its workers."""

    def __init__(self, name: str):
        self.name = name
        # Short: the libvirt socket path must fit a sockaddr_un (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="vlhost-", dir="/tmp"))
        self.holder: Popen | None = None
        self.virtlogd: Popen | None = None
        self.libvirtd: Popen | None = None
        self.agent: Popen | None = None
        self.checks: Popen | None = None
        self.env: dict[str, str] = {}

    @property
    def uri(self) -> str:
        """The box's libvirtd, as reached from outside its namespace."""
        return f"qemu:///system?socket={self.root / 'run' / 'libvirt-sock'}"

    @property
    def disks_root(self) -> Path:
        return self.root / "disks"

    # --- the machine

    def start(self) -> None:
        for private in PRIVATE_MOUNTS:
            (self.root / private).mkdir()
        # The machine's libvirt configuration (VirtLab's qemu.conf) and QEMU capability cache, but
        # none of its domains.
        shutil.copytree("/etc/libvirt", self.root / "etc", dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(self.root / "etc" / "qemu", ignore_errors=True)
        (self.root / "etc" / "qemu").mkdir()
        if Path("/var/cache/libvirt").is_dir():
            shutil.copytree("/var/cache/libvirt", self.root / "cache", dirs_exist_ok=True, symlinks=True)
        (self.root / "lib" / "qemu").mkdir()
        shutil.chown(self.root / "lib" / "qemu", "libvirt-qemu", "libvirt-qemu")
        (self.root / "log" / "qemu").mkdir()
        self.disks_root.chmod(0o711)
        mounts = "; ".join(f"mount --bind {self.root / p} {target}" for p, target in PRIVATE_MOUNTS.items())
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--",
                                        "sh", "-ec", f"{mounts}; exec sleep infinity"])  # fmt: skip
        holder = self.holder
        servers.wait_for(lambda: _comm(holder.pid) == "sleep" or holder.poll() is not None, 10, "mount namespace")
        if holder.poll() is not None:
            raise RuntimeError(f"host box {self.name}: mounting its private directories failed")
        self.virtlogd = self.popen(["virtlogd", "--pid-file", str(self.root / "virtlogd.pid")], log="virtlogd.log")
        self.start_libvirtd()

    def popen(self, argv: list[str], env: dict[str, str] | None = None, log: str | None = None) -> Popen:
        """Run a command inside the box (nsenter execs it: the Popen's pid is the command's)."""
        out = open(self.root / log, "ab") if log else None  # noqa: SIM115  (the child keeps it)
        try:
            return subprocess.Popen(
                ["nsenter", "-t", str(self._holder_pid()), "--mount", f"--wd={servers.ROOT}", "--", *argv],
                env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT if out else None,
            )  # fmt: skip
        finally:
            if out is not None:
                out.close()

    def _holder_pid(self) -> int:
        assert self.holder is not None, "the box is not started"
        return self.holder.pid

    def start_libvirtd(self) -> None:
        self.libvirtd = self.popen(["libvirtd", "--pid-file", str(self.root / "libvirtd.pid")], log="libvirtd.log")
        servers.wait_for(self.libvirt_answers, 60, f"libvirtd of {self.name}")

    def libvirt_answers(self) -> bool:
        with Hypervisor.connect(self.uri, self.disks_root) as hv:
            hv.list_tagged()
        return True

    def kill_libvirtd(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """libvirtd dies (SIGKILL: a crash; SIGTERM: a restart); its VMs keep running."""
        assert self.libvirtd is not None
        self.libvirtd.send_signal(sig)
        self.libvirtd.wait(30)
        self.libvirtd = None

    def restart_libvirtd(self, sig: signal.Signals = signal.SIGKILL, down_s: float = 0.0) -> None:
        self.kill_libvirtd(sig)
        time.sleep(down_s)
        self.start_libvirtd()

    # --- its workers: the host agent (host.<name> and web, with its relay and adverts) and the
    # check worker (host.<name>.checks), as the Procfile runs them

    def start_workers(self, env: dict[str, str]) -> None:
        """Both workers with `env` (kept for restarts)."""
        self.env = {**env, "VIRTLAB_HOST_NAME": self.name, "PYTHONPATH": str(servers.ROOT)}
        self.start_agent()
        self.start_checks()

    def start_agent(self) -> None:
        """The host agent; returns once it is ready (its recovery done, its first advert out)."""
        self.agent = self._worker("agent", [task_calls.host_queue(self.name), "web"])

    def start_checks(self) -> None:
        """The check worker, if this version of VirtLab has one (else the agent takes checks too)."""
        checks_queue = getattr(task_calls, "host_checks_queue", None)
        if checks_queue is not None:
            self.checks = self._worker("checks", [checks_queue(self.name)])

    def _worker(self, role: str, queues: list[str]) -> Popen:
        """A Celery worker of this host inside the box; returns once it says it is ready."""
        log = self.root / f"{role}.log"
        seen = log.stat().st_size if log.exists() else 0
        suffix = "" if role == "agent" else f"-{role}"
        proc = self.popen(
            [str(servers.VENV_BIN / "celery"), "-A", "portal", "worker", "-n", f"{self.name}{suffix}@%h",
             "-Q", ",".join(queues), "-c", "1", "--without-heartbeat", "--without-mingle", "--without-gossip",
             "-l", "INFO"],
            env=self.env, log=log.name,
        )  # fmt: skip

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{role} worker of {self.name} exited: see {log}")
            return b" ready." in log.read_bytes()[seen:]

        servers.wait_for(ready, 60, f"{role} worker of {self.name}")
        return proc

    def advertised(self, redis_url: str) -> bool:
        """Whether the host registry still shows this host (its advert lives 30 s past the agent)."""
        return bool(redis.Redis.from_url(redis_url).exists(ADVERT_PREFIX + self.name))

    def kill_agent(self) -> None:
        """SIGKILL the agent and its pool, as a crash would: no warm shutdown, nothing acknowledged."""
        _kill(self.agent)
        self.agent = None

    def kill_checks(self) -> None:
        """SIGKILL the worker that runs checks (the agent, where there is no check worker)."""
        if self.checks is None:
            self.kill_agent()
        _kill(self.checks)
        self.checks = None

    def restart_agent(self) -> None:
        self.kill_agent()
        self.start_agent()

    def restart_checks(self) -> None:
        self.kill_checks()
        if self.agent is None:  # it was the one running checks
            self.start_agent()
        self.start_checks()

    def lose(self) -> None:
        """The host stops answering: both workers die and stay dead (its VMs keep running)."""
        self.kill_agent()
        self.kill_checks()

    def stop_workers(self) -> None:
        for proc in (self.agent, self.checks):
            if proc is not None:
                stop_process(proc, 20)
        self.agent = self.checks = None

    def log(self, role: str = "agent") -> str:
        path = self.root / f"{role}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- what is on it

    def domains(self) -> list[HostDomain]:
        with Hypervisor.connect(self.uri, self.disks_root) as hv:
            return [HostDomain(d.session_id, d.active) for d in hv.list_tagged()]

    def disk_sessions(self) -> list[str]:
        return list_disk_sessions(self.disks_root)

    def close(self) -> None:
        """Stop the workers, destroy every VM of the box, stop its daemons, remove its directories."""
        self.stop_workers()
        if self.holder is not None and self.libvirtd is None:
            with contextlib.suppress(Exception):
                self.start_libvirtd()
        if self.libvirtd is not None:
            with contextlib.suppress(HypervisorError), Hypervisor.connect(self.uri, self.disks_root) as hv:
                for domain in hv.list_tagged():
                    with contextlib.suppress(DomainMissing):
                        hv.vm(domain.session_id).destroy()
        self._kill_leftover_qemu()
        for proc in (self.libvirtd, self.virtlogd, self.holder):
            if proc is not None and proc.poll() is None:
                stop_process(proc, 10)
        self.libvirtd = self.virtlogd = self.holder = None
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftover_qemu(self) -> None:
        """QEMU processes this box's libvirtd started and could not destroy (it is gone): by their pid files."""
        for pid_file in (self.root / "run" / "qemu").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def _kill(proc: Popen | None) -> None:
    if proc is not None:
        kill_process_tree(proc.pid)
        proc.wait()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def host_box(name: str) -> Iterator[HostBox]:
    box = HostBox(name)
    try:
        box.start()
        yield box
    finally:
        box.close()
