"""Lab limits, read from settings (each default is defined once, in portal/settings.py; the
environment overrides it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache

from labs.profiles import PROFILES
from labs.services.catalog import get_lab

log = logging.getLogger(__name__)


def max_running_per_user() -> int:
    return settings.LABS_MAX_RUNNING_PER_USER


def start_rate() -> tuple[int, int]:
    """(starts, window seconds) allowed per learner."""
    return settings.LABS_START_RATE, settings.LABS_START_RATE_WINDOW_S


def ttl() -> timedelta:
    """Lifetime of a fresh session (the countdown the page shows)."""
    return timedelta(seconds=settings.LABS_TTL_S)


def extend_step() -> timedelta:
    return timedelta(seconds=settings.LABS_EXTEND_S)


def max_lifetime() -> timedelta:
    """Hard cap on a session's life, counted from ready: Extend never goes past it."""
    return timedelta(seconds=settings.LABS_MAX_LIFETIME_S)


def idle_timeout() -> timedelta:
    return timedelta(seconds=settings.LABS_IDLE_TIMEOUT_S)


def provision_timeout() -> timedelta:
    """A session provisioning longer than this was interrupted (its worker died)."""
    return timedelta(seconds=settings.LABS_PROVISION_TIMEOUT_S)


def reap_grace_s() -> int:
    """Unknown VMs of our namespace younger than this are spared (a create may be in flight)."""
    return settings.LABS_REAP_GRACE_S


def max_queued() -> int:
    """Starts that may wait for a VM slot at once, over all hosts."""
    return settings.LABS_MAX_QUEUED


def queue_timeout() -> timedelta:
    """A start still waiting for a VM slot after this expires (its learner is told)."""
    return timedelta(seconds=settings.LABS_QUEUE_TIMEOUT_S)


def disk_per_session_mib() -> int:
    """Disk a new session is budgeted: its overlay's growth and its step checkpoints (~75 MiB each)."""
    return settings.LABS_DISK_PER_SESSION_MIB


def disk_reserve_mib() -> int:
    """Disk a host keeps free: below it, no new VM or checkpoint (a VM whose write finds no space pauses)."""
    return settings.LABS_DISK_RESERVE_MIB


def max_vms_per_host() -> int:
    """Operator cap on VMs per host on top of what its memory allows (0 = memory only)."""
    return settings.LABS_MAX_VMS_PER_HOST


@dataclass(frozen=True)
class PoolTarget:
    """How many warm VMs of `profile` (prepared for `lab_slug`, if set) each host keeps."""

    profile: str
    lab_slug: str
    size: int


def pool_targets() -> list[PoolTarget]:
    """LABS_POOL_SIZES parsed; entries naming an unknown lab or profile, or a bad count, are skipped."""
    targets = []
    for entry in filter(None, (part.strip() for part in settings.LABS_POOL_SIZES.split(","))):
        key, _, count = entry.partition("=")
        if not count.isdigit():
            log.warning("LABS_POOL_SIZES: %r is not <profile>=N or lab:<slug>=N", entry)
            continue
        if key.startswith("lab:"):
            lab = get_lab(key.removeprefix("lab:"))
            if lab is None:
                log.warning("LABS_POOL_SIZES: no valid lab %r", key)
                continue
            targets.append(PoolTarget(lab.profile, lab.slug, int(count)))
        elif key in PROFILES:
            targets.append(PoolTarget(key, "", int(count)))
        else:
            log.warning("LABS_POOL_SIZES: no profile %r", key)
    return targets


def hit_start_rate(user_id: int) -> bool:
    """Count a start; True when the learner is over the limit (fixed window in the Redis cache)."""
    limit, window = start_rate()
    key = f"labs:starts:{user_id}"
    cache.add(key, 0, timeout=window)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)
        count = 1
    return count > limit
