"""Retention: records older than LABS_TIMELINE_KEEP_DAYS are deleted (beat runs labs.tasks.purge_timelines)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from labs.timeline.models import SessionTimeline

log = logging.getLogger(__name__)


def purge_old_timelines() -> int:
    cutoff = timezone.now() - timedelta(days=settings.LABS_TIMELINE_KEEP_DAYS)
    deleted, _ = SessionTimeline.objects.filter(created_at__lt=cutoff).delete()
    if deleted:
        log.info("deleted %d session timelines older than %s", deleted, cutoff)
    return deleted
