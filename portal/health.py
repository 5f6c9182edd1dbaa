"""Component health, shared by GET /healthz and `manage.py doctor`.

Each check returns a Check with a hint a person can act on. Hypervisor facts come from the
host agents' adverts: the web tier holds no libvirt connection.

Every probe is bounded: it opens its own connections with short timeouts and closes them, and it
runs in a thread of its own that the caller waits for no longer than PROBE_DEADLINE_S (a probe
still running then is reported as timed out, and no second thread is started for it while the
first lives). /healthz goes through `cached_report`: one probe run in flight per process, its
result reused for HEALTHZ_CACHE_S, so however many callers arrive, Redis, Celery and the database
see at most one round of probes per process per period.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis
from django.conf import settings
from django.db import connection, connections
from kombu import Connection
from kombu.pidbox import Mailbox

from labs import host_registry

PROBE_TIMEOUT_S = 1.0  # socket connect and read of each probe; also how long Celery replies are awaited
PROBE_DEADLINE_S = 3.0  # a probe not done by then is reported as timed out

# The user:password part of any URL, e.g. redis://:secret@host or postgres://u:p@host/db.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s@]*@", re.IGNORECASE)


def redact_urls(text: str) -> str:
    """Hide the credentials of every URL in `text`: doctor output is pasted, /healthz details are shared."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""

    def __post_init__(self) -> None:
        # Details quote settings and driver errors; none may carry a password out.
        object.__setattr__(self, "detail", redact_urls(self.detail))
        object.__setattr__(self, "hint", redact_urls(self.hint))

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _redis(url: str, timeout: float) -> redis.Redis:
    """A client of the probe's own (closed by the caller): never a pool that callers share."""
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        vendor = connection.vendor
        return Check("database", True, f"{vendor} reachable")
    except Exception as exc:  # any driver error means "down" to the operator
        return Check("database", False, str(exc), "start PostgreSQL or check DATABASE_URL")


def check_redis(timeout: float = PROBE_TIMEOUT_S) -> Check:
    try:
        with _redis(settings.REDIS_URL, timeout) as client:
            client.ping()
        return Check("redis", True, f"{settings.REDIS_URL} answers PING")
    except redis.RedisError as exc:
        return Check("redis", False, str(exc), "start Redis (make services) or check REDIS_URL")


def ping_workers(broker_url: str, timeout: float = PROBE_TIMEOUT_S) -> list[str]:
    """The names of the Celery workers that answer a broadcast ping within `timeout`.

    Not `app.control.ping`: each ping takes a connection and a producer from kombu's process-wide
    pools (shared with every task send, 10 connections) and waits for them without a timeout, so
    ten concurrent pings can hold them all and wait for ever. This one has a connection of its own.
    """
    from portal.celery import app  # the control exchange and serializers the workers listen with

    # The reply wait is a blocking pop of up to a second: reads must outlast it.
    transport = {"socket_timeout": timeout + 2, "socket_connect_timeout": timeout, "max_retries": 1}
    with Connection(broker_url, connect_timeout=timeout, transport_options=transport) as conn:
        conf = app.conf
        mailbox = Mailbox(conf.control_exchange, type="fanout", connection=conn,
                          accept=conf.accept_content, serializer=conf.task_serializer)  # fmt: skip
        replies = mailbox.multi_call("ping", timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)


def check_celery(timeout: float = PROBE_TIMEOUT_S) -> Check:
    try:
        # Probe the (Redis) broker first: kombu retries a publish to a dead broker for a long time.
        with _redis(settings.CELERY_BROKER_URL, timeout) as client:
            client.ping()
        workers = ping_workers(settings.CELERY_BROKER_URL, timeout)
    except Exception as exc:  # broker down surfaces as kombu/redis errors
        return Check("celery", False, f"broker unreachable: {exc}", "start Redis, then the worker")
    if not workers:
        return Check("celery", False, "no worker answered", "start a worker: make run (or celery -A portal worker)")
    return Check("celery", True, f"{len(workers)} worker(s): {', '.join(workers)}")


def check_hosts(timeout: float = PROBE_TIMEOUT_S) -> list[Check]:
    """libvirt, accelerator and guest image, as advertised by every live host agent."""
    try:
        with _redis(settings.REDIS_URL, timeout) as client:
            adverts = host_registry.list_hosts(client)
    except redis.RedisError as exc:
        return [Check("libvirt", False, f"cannot read host adverts: {exc}", "start Redis")]
    if not adverts:
        hint = "start a host agent (celery worker with -Q host.<name>); adverts expire after 30 s"
        return [
            Check("libvirt", False, "no hypervisor host has advertised itself", hint),
            Check("accelerator", False, "unknown: no host agent", hint),
            Check("guest_image", False, "unknown: no host agent", hint),
        ]
    return [check for a in adverts for check in advert_checks(a)]


def advert_checks(a: host_registry.HostAdvert) -> list[Check]:
    """Turn one host's advert into libvirt / accelerator / guest-image / confinement checks."""
    if not a.libvirt_ok:
        accel_hint = f"fix libvirt on {a.name} first: the accelerator is probed through it"
    else:
        accel_hint = "" if a.accelerator == "kvm" else "TCG works but is slower; KVM needs VT-x/AMD-V"
    return [
        Check(
            f"libvirt:{a.name}",
            a.libvirt_ok,
            f"{a.vm_count}/{a.max_vms} VMs, {a.free_mem_mib} MiB free" if a.libvirt_ok else a.libvirt_error,
            "" if a.libvirt_ok else "run scripts/setup-libvirt.sh (starts virtlogd and libvirtd), or check LIBVIRT_URI",
        ),
        Check(
            f"accelerator:{a.name}",
            a.accelerator in {"kvm", "tcg"},
            f"{a.accelerator}: {a.accelerator_reason}",
            accel_hint,
        ),
        Check(
            f"guest_image:{a.name}",
            a.image_present,
            a.image_dir + (f" ({a.image_hash})" if a.image_hash else ""),
            "" if a.image_present else "build it: make guest",
        ),
        Check(
            f"confinement:{a.name}",
            a.confined,
            a.confinement or "not checked (libvirt unreachable)",
            "" if a.confined else "run scripts/setup-libvirt.sh on the host, then restart its agent",
        ),
    ]


# --- Running the probes, each bounded in time and in threads.


@dataclass(frozen=True)
class Probe:
    name: str  # the check reported when the probe does not answer in time
    run: Callable[[], list[Check]]
    hint: str


PROBES = (
    Probe("database", lambda: [check_database()], "check that the database is up and not overloaded"),
    Probe("redis", lambda: [check_redis()], "check that Redis is up and not overloaded (REDIS_URL)"),
    Probe("celery", lambda: [check_celery()], "check that the broker is up and not overloaded"),
    Probe("libvirt", check_hosts, "check that Redis is up and not overloaded (host adverts live there)"),
)


class _ProbeThread(threading.Thread):
    def __init__(self, probe: Probe):
        super().__init__(name=f"health-{probe.name}", daemon=True)
        self.probe = probe
        self.started_at = time.monotonic()
        self.result: list[Check] | None = None

    def run(self) -> None:
        try:
            self.result = self.probe.run()
        except Exception as exc:  # a probe that raises is a failed check, never a dead /healthz
            self.result = [Check(self.probe.name, False, f"probe failed: {exc!r}", self.probe.hint)]
        finally:
            connections.close_all()  # this thread's own database connection, if the probe opened one


_threads_lock = threading.Lock()
_threads: dict[str, _ProbeThread] = {}  # the latest thread of each probe, perhaps still running


def _start(probe: Probe) -> _ProbeThread | None:
    """A new thread for `probe`, or None while its previous one still runs: a hung database or
    broker costs one thread per probe, however many runs ask."""
    with _threads_lock:
        previous = _threads.get(probe.name)
        if previous is not None and previous.is_alive():
            return None
        thread = _threads[probe.name] = _ProbeThread(probe)
    thread.start()
    return thread


def run_all(deadline: float = PROBE_DEADLINE_S) -> list[Check]:
    """Run every probe at once and wait for them at most `deadline` seconds in all."""
    # A probe whose previous thread still runs is not started again: that thread's answer is awaited.
    started = [(probe, _start(probe) or _threads[probe.name]) for probe in PROBES]
    end = time.monotonic() + deadline
    checks: list[Check] = []
    for probe, thread in started:
        thread.join(max(0.0, end - time.monotonic()))
        if thread.result is not None:
            checks += thread.result
        else:
            running_s = time.monotonic() - thread.started_at
            detail = f"no answer within {deadline:g} s (probe running for {running_s:.0f} s)"
            checks.append(Check(probe.name, False, detail, probe.hint))
    return checks


@dataclass(frozen=True)
class Report:
    checks: list[Check]
    taken_at: float  # time.monotonic() when the probes finished

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.taken_at


class ReportCache:
    """One probe run in flight per process; its report is served to everyone for `ttl` seconds,
    and to concurrent callers while the next run is in flight."""

    def __init__(self) -> None:
        self._refreshing = threading.Lock()
        self._latest: Report | None = None

    def get(self, ttl: float) -> Report:
        latest = self._latest
        if latest is not None and latest.age_s < ttl:
            return latest
        if self._refreshing.acquire(blocking=False):
            try:
                latest = self._latest  # refreshed by another caller since we looked?
                if latest is None or latest.age_s >= ttl:
                    latest = self._latest = Report(run_all(), time.monotonic())
                return latest
            finally:
                self._refreshing.release()
        if latest is not None:
            return latest  # a run is in flight: its predecessor answers meanwhile
        # The process's first run is in flight: wait for it, no longer than a run can take.
        if self._refreshing.acquire(timeout=PROBE_DEADLINE_S + 1):
            self._refreshing.release()
        return self._latest or Report([Check("health", False, "the first probes are still running")], time.monotonic())

    def forget(self) -> None:
        self._latest = None


_cache = ReportCache()


def cached_report() -> Report:
    """The report /healthz serves: at most HEALTHZ_CACHE_S old, never a second run in flight."""
    return _cache.get(settings.HEALTHZ_CACHE_S)


def forget() -> None:
    """Drop the cached report (tests that change the services between calls)."""
    _cache.forget()
