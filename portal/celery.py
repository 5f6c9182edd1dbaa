"""The one Celery app. Configuration comes from Django settings under the CELERY_ namespace.

Web tasks (labs/tasks.py) are found by autodiscovery; the host side's tasks (labs/host/tasks.py)
are imported by workers only (CELERY_IMPORTS), never by the web processes that send them work.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("virtlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The reconciler: expiry, queued starts, and each host's libvirt-vs-DB repair (labs.task_calls).
app.conf.beat_schedule = {
    "labs-reconcile": {"task": "labs.tasks.reconcile_all", "schedule": 30.0, "options": {"queue": "web"}},
    # Classes: seats prepared ahead, opened, kept filled, ended at their end plus grace (classes.task_calls).
    "classes-tick": {"task": "classes.tasks.tick_classes", "schedule": 30.0, "options": {"queue": "web"}},
    # Session timelines past LABS_TIMELINE_KEEP_DAYS are deleted (labs.timeline.retention).
    "timelines-purge": {"task": "labs.tasks.purge_timelines", "schedule": 3600.0, "options": {"queue": "web"}},
}
