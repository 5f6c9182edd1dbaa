"""Lab limits, read from settings with defaults (override any of them in portal/settings or env)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.cache import cache


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


def max_running_per_user() -> int:
    return _setting("LABS_MAX_RUNNING_PER_USER", 1)


def start_rate() -> tuple[int, int]:
    """(starts, window seconds) allowed per learner."""
    return _setting("LABS_START_RATE", 6), _setting("LABS_START_RATE_WINDOW_S", 600)


def ttl() -> timedelta:
    """Lifetime of a fresh session (the countdown the page shows)."""
    return timedelta(seconds=_setting("LABS_TTL_S", 45 * 60))


def extend_step() -> timedelta:
    return timedelta(seconds=_setting("LABS_EXTEND_S", 15 * 60))


def max_lifetime() -> timedelta:
    """Hard cap on a session's life, counted from ready: Extend never goes past it."""
    return timedelta(seconds=_setting("LABS_MAX_LIFETIME_S", 2 * 3600))


def idle_timeout() -> timedelta:
    return timedelta(seconds=_setting("LABS_IDLE_TIMEOUT_S", 20 * 60))


def provision_timeout() -> timedelta:
    """A session provisioning longer than this was interrupted (its worker died)."""
    return timedelta(seconds=_setting("LABS_PROVISION_TIMEOUT_S", 300))


def reap_grace_s() -> int:
    """Unknown VMs of our namespace younger than this are spared (a create may be in flight)."""
    return _setting("LABS_REAP_GRACE_S", 120)


def max_vms_per_host() -> int:
    """Operator cap on VMs per host on top of what its memory allows (0 = memory only)."""
    return _setting("LABS_MAX_VMS_PER_HOST", 0)


def pool_sizes() -> dict[str, int]:
    """Warm VMs kept per profile on each host."""
    return dict(getattr(settings, "LABS_POOL_SIZES", {"tiny": 1}))


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
