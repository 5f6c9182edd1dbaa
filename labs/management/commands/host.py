"""`manage.py host teardown`: destroy every VM this deployment runs on this host (`make run` calls
it when it stops, so a stopped portal leaves no VM running). Runs on the host: it opens libvirt."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from labs.host.reconcile import tear_down_host


class Command(BaseCommand):
    help = "On this hypervisor host: end its live sessions and destroy every VM of this deployment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["teardown"])

    def handle(self, *args: Any, **options: Any) -> None:
        gone = tear_down_host(settings.VIRTLAB_HOST_NAME)
        self.stdout.write(f"host {settings.VIRTLAB_HOST_NAME}: {len(gone)} VM(s) destroyed {' '.join(gone)}".rstrip())
