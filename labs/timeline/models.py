"""Finished records, gzipped, one row per session: kept apart from the hot session tables (read
only when a replay opens), and deleted with the session, hence with the learner's account."""

from __future__ import annotations

import gzip

from django.db import models

from labs.models import LabSession


class SessionTimeline(models.Model):
    session = models.OneToOneField(LabSession, primary_key=True, on_delete=models.CASCADE, related_name="timeline")
    cast_gz = models.BinaryField()  # the asciicast v2 record, gzip-compressed
    raw_bytes = models.PositiveIntegerField()
    duration_s = models.FloatField(default=0.0)
    cut = models.BooleanField(default=False)  # the size cap was reached: the record says where
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"timeline of {self.session_id} ({self.raw_bytes} bytes)"

    def text(self) -> str:
        return gzip.decompress(bytes(self.cast_gz)).decode("utf-8", errors="replace")
