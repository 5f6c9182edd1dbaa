"""Component health, shared by GET /healthz and `manage.py doctor`.

Each check returns a Check with a hint a person can act on. Hypervisor facts come from the
host agents' adverts: the web tier holds no libvirt connection.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import redis
from celery import Celery
from django.conf import settings
from django.db import connection

from labs import host_registry

# The user:password part of any URL, e.g. redis://:secret@host or postgres://u:p@host/db.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s@]*@", re.IGNORECASE)


def redact_urls(text: str) -> str:
    """Hide the credentials of every URL in `text`: /healthz is public and doctor output is pasted."""
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


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        vendor = connection.vendor
        return Check("database", True, f"{vendor} reachable")
    except Exception as exc:  # any driver error means "down" to the operator
        return Check("database", False, str(exc), "start PostgreSQL or check DATABASE_URL")


def check_redis() -> Check:
    try:
        host_registry.redis_client().ping()
        return Check("redis", True, f"{settings.REDIS_URL} answers PING")
    except redis.RedisError as exc:
        return Check("redis", False, str(exc), "start Redis (make services) or check REDIS_URL")


def check_celery(timeout: float = 1.0) -> Check:
    try:
        # Probe the (Redis) broker first: kombu retries a publish to a dead broker for a long time.
        redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=timeout).ping()
        # A throw-away app: its connection pool follows the current setting, never a stale broker.
        probe = Celery("virtlab-health", broker=settings.CELERY_BROKER_URL, set_as_current=False)
        try:
            replies = probe.control.ping(timeout=timeout) or []
        finally:
            probe.close()
    except Exception as exc:  # broker down surfaces as kombu/redis errors
        return Check("celery", False, f"broker unreachable: {exc}", "start Redis, then the worker")
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        return Check("celery", False, "no worker answered", "start a worker: make run (or celery -A portal worker)")
    return Check("celery", True, f"{len(workers)} worker(s): {', '.join(workers)}")


def check_hosts() -> list[Check]:
    """libvirt, accelerator and guest image, as advertised by every live host agent."""
    try:
        adverts = host_registry.list_hosts()
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


def run_all() -> list[Check]:
    return [check_database(), check_redis(), check_celery(), *check_hosts()]


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
