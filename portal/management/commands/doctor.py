"""`manage.py doctor`: check every component and say how to fix what is broken."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labs.host.host_agent import build_advert
from portal import health


class Command(BaseCommand):
    help = "Check the database, Redis, Celery workers, libvirt, KVM/TCG and the guest image."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--local",
            action="store_true",
            help="also probe this machine's libvirt and guest image directly (run on a hypervisor host)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        checks = health.run_all()
        if options["local"]:
            # This machine's libvirt and guest image, probed directly: a CLI on a host, never the web tier.
            checks += health.advert_checks(build_advert())
        width = max(len(c.name) for c in checks)
        for c in checks:
            mark = self.style.SUCCESS("ok  ") if c.ok else self.style.ERROR("FAIL")
            self.stdout.write(f"{mark} {c.name.ljust(width)}  {c.detail}")
            if not c.ok and c.hint:
                self.stdout.write(f"     {' ' * width}  fix: {c.hint}")
        failed = [c.name for c in checks if not c.ok]
        if failed:
            raise CommandError(f"{len(failed)} check(s) failed: {', '.join(failed)}")
        self.stdout.write(self.style.SUCCESS("all checks passed"))
