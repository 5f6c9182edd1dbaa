"""Lab limits, read from settings (each default is defined once, in portal/settings.py; the
environment overrides it)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache

from labs.models import StepResult
from labs.profiles import PROFILES
from labs.services.catalog import get_lab

log = logging.getLogger(__name__)


def max_running_per_user() -> int:
    return settings.LABS_MAX_RUNNING_PER_USER


def start_rate() -> tuple[int, int]:
    """(starts, window seconds) allowed per learner."""
    return settings.LABS_START_RATE, settings.LABS_START_RATE_WINDOW_S


def check_rate() -> tuple[int, int]:
    """(checks, window seconds) allowed per learner."""
    return settings.LABS_CHECK_RATE, settings.LABS_CHECK_RATE_WINDOW_S


def check_time_budget() -> tuple[int, int]:
    """(seconds of check-worker time, window seconds) each learner's checks may take."""
    return settings.LABS_CHECK_SECONDS, settings.LABS_CHECK_RATE_WINDOW_S


def charge_check_time(user_id: int, seconds: float) -> None:
    """Count a finished check's worker time against its learner (the host calls this): a learner
    whose checks are slow (a guest that stalls them to their timeout) cannot hold a share of the
    host's check workers that other learners' checks then wait for."""
    key, window = f"labs:check-ms:{user_id}", check_time_budget()[1]
    cache.add(key, 0, timeout=window)
    try:
        cache.incr(key, max(1, round(seconds * 1000)))
    except ValueError:  # expired between add and incr
        cache.set(key, max(1, round(seconds * 1000)), timeout=window)


def check_time_spent(user_id: int) -> float:
    """Seconds of check-worker time the learner's checks took in the current window."""
    return int(cache.get(f"labs:check-ms:{user_id}") or 0) / 1000


def check_output_max_bytes() -> int:
    """Bytes of each of stdout and stderr a check's guest command may print; more fails the assertion."""
    return settings.LABS_CHECK_OUTPUT_MAX_BYTES


def step_results_kept() -> int:
    """Check results stored per step of a session (the latest); older ones are deleted."""
    return settings.LABS_STEP_RESULTS_KEPT


def prune_step_results(session_id: str, step: int) -> int:
    """Delete all but the latest step_results_kept() results of one step of a session (the rate
    limit bounds how fast they come, this how many stay); returns how many were deleted."""
    results = StepResult.objects.filter(session_id=session_id, step=step)
    latest = list(results.order_by("-created_at", "-id").values_list("id", flat=True)[: step_results_kept()])
    deleted, _ = results.exclude(id__in=latest).delete()
    return deleted


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
    return _hit_rate(f"labs:starts:{user_id}", *start_rate())


def hit_check_rate(user_id: int) -> bool:
    """Count a check; True when the learner is over the limit (fixed window in the Redis cache)."""
    return _hit_rate(f"labs:checks:{user_id}", *check_rate())


def _hit_rate(key: str, limit: int, window: int) -> bool:
    cache.add(key, 0, timeout=window)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)
        count = 1
    return count > limit


# One check in flight per session: a marker in the Redis cache, set by the web side when it sends
# the check and removed by the host when the verdict is recorded (or the task ends any other way).
# Its expiry is the backstop for a worker that died mid-check.


def _check_key(session_id: str) -> str:
    return f"labs:check-running:{session_id}"


def claim_check(session_id: str) -> str | None:
    """Mark a check of the session as running; its claim token, or None if one runs already."""
    token = secrets.token_hex(8)
    return token if cache.add(_check_key(session_id), token, timeout=settings.LABS_CHECK_INFLIGHT_TTL_S) else None


def release_check(session_id: str, token: str) -> None:
    """End the check that holds `token` (idempotent; a later check's claim is left alone)."""
    key = _check_key(session_id)
    if token and cache.get(key) == token:
        cache.delete(key)


def check_running(session_id: str) -> bool:
    return cache.get(_check_key(session_id)) is not None
