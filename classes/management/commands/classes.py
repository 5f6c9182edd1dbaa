"""`manage.py classes …`: classes from scripts, through the same services as the pages and the API.

classes grant-instructor USER        give USER the instructor role (staff's decision)
classes revoke-instructor USER
classes create --owner U --title T --lab SLUG [--lab SLUG2] --seats N --starts ISO --ends ISO
               [--grace MIN] [--lead MIN]          prints the class id and its invite code
classes provision ID                 prepare the seats now
classes status ID [--json]           state, seats ready, learners, progress per step
classes seats ID reset|extend|reprovision SEAT… [--step N] [--as USER]
classes export ID [--format csv|json] [--output FILE]
classes end ID                       end now: seats torn down, results kept
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from classes import export, lifecycle
from classes.models import LabClass
from classes.progress import CellState, class_progress
from classes.provisioning import readiness
from classes.seats import SeatAction, act_on_seats
from labs.services.errors import LabError
from portal.roles import INSTRUCTOR, grant_role


def when(text: str) -> datetime:
    parsed = parse_datetime(text)
    if parsed is None:
        raise CommandError(f"{text!r} is not a date and time (e.g. 2030-01-31T09:00 or 2030-01-31T09:00+08:00)")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


class Command(BaseCommand):
    help = "Instructor classes: grant the role, create, provision, status, seat actions, export, end."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        for name in ("grant-instructor", "revoke-instructor"):
            sub.add_parser(name).add_argument("user")
        create = sub.add_parser("create")
        create.add_argument("--owner", required=True)
        create.add_argument("--title", required=True)
        create.add_argument("--lab", action="append", required=True, help="repeat for labs in order")
        create.add_argument("--seats", type=int, required=True)
        create.add_argument("--starts", type=when, default=None, help="ISO date and time (default: now)")
        create.add_argument("--ends", type=when, required=True)
        create.add_argument("--grace", type=int, default=15, help="minutes the seats live past the end")
        create.add_argument("--lead", type=int, default=10, help="minutes before the start the seats are prepared")
        sub.add_parser("tick")
        for name in ("provision", "end"):
            sub.add_parser(name).add_argument("id", type=int)
        status = sub.add_parser("status")
        status.add_argument("id", type=int)
        status.add_argument("--json", action="store_true")
        seats = sub.add_parser("seats")
        seats.add_argument("id", type=int)
        seats.add_argument("seat_action", choices=[a.value for a in SeatAction])
        seats.add_argument("seat", type=int, nargs="+")
        seats.add_argument("--step", type=int)
        seats.add_argument("--as", dest="actor", help="the instructor acting (default: the class's owner)")
        out = sub.add_parser("export")
        out.add_argument("id", type=int)
        out.add_argument("--format", choices=["csv", "json"], default="csv")
        out.add_argument("--output", help="file to write (default: stdout)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            getattr(self, "do_" + action.replace("-", "_"))(options)
        except LabError as exc:
            raise CommandError(exc.message) from exc

    def _user(self, name: str) -> User:
        user = User.objects.filter(username=name).first()
        if user is None:
            raise CommandError(f"no user called {name!r}")
        return user

    def _class(self, class_id: int) -> LabClass:
        klass = LabClass.objects.filter(pk=class_id).first()
        if klass is None:
            raise CommandError(f"no class {class_id}")
        return klass

    def do_grant_instructor(self, options: dict[str, Any]) -> None:
        user = self._user(options["user"])
        grant_role(user, INSTRUCTOR)
        self.stdout.write(self.style.SUCCESS(f"{user.username} is an instructor"))

    def do_revoke_instructor(self, options: dict[str, Any]) -> None:
        user = self._user(options["user"])
        user.groups.remove(*user.groups.filter(name=INSTRUCTOR))
        self.stdout.write(self.style.SUCCESS(f"{user.username} is no longer an instructor"))

    def do_create(self, options: dict[str, Any]) -> None:
        spec = lifecycle.ClassSpec(
            title=options["title"], labs=options["lab"], starts_at=options["starts"] or timezone.now(),
            ends_at=options["ends"], seats=options["seats"], grace_minutes=options["grace"],
            lead_minutes=options["lead"],
        )  # fmt: skip
        klass = lifecycle.create_class(self._user(options["owner"]), spec)
        invite = klass.invites.get()
        self.stdout.write(f"class {klass.pk} ({klass.get_state_display()}): invite code {invite.code}")
        self.stdout.write(f"hosts: {json.dumps(klass.host_shares, sort_keys=True)}")

    def do_provision(self, options: dict[str, Any]) -> None:
        klass = lifecycle.provision_now(None, self._class(options["id"]))
        self.stdout.write(f"class {klass.pk}: preparing seats on {json.dumps(klass.host_shares, sort_keys=True)}")

    def do_end(self, options: dict[str, Any]) -> None:
        klass = lifecycle.end_class(None, self._class(options["id"]))
        self.stdout.write(f"class {klass.pk}: ended at {klass.ended_at:%Y-%m-%d %H:%M:%S %Z}")

    def do_tick(self, options: dict[str, Any]) -> None:
        self.stdout.write(f"{lifecycle.tick()} class(es) advanced")

    def do_status(self, options: dict[str, Any]) -> None:
        klass = self._class(options["id"])
        ready = readiness(klass)
        progress = class_progress(klass)
        counts = {step: {str(k): v for k, v in progress.counts(step).items()} for step in range(1, progress.steps + 1)}
        status = {
            "id": klass.pk, "title": klass.title, "state": klass.state, "lab": klass.lab_slug,
            "seats": klass.seats, "seats_ready": ready.ready, "seats_preparing": ready.preparing,
            "learners": sum(not s.waiting for s in progress.seats), "waiting": sum(s.waiting for s in progress.seats),
            "steps": counts,
        }  # fmt: skip
        if options["json"]:
            self.stdout.write(json.dumps(status))
            return
        self.stdout.write(f"class {klass.pk} {klass.title!r}: {klass.get_state_display()}, lab {klass.lab_slug}")
        self.stdout.write(f"seats ready {ready.ready}/{ready.seats} ({ready.preparing} preparing)")
        self.stdout.write(f"learners {status['learners']}, waiting {status['waiting']}")
        for step, per in counts.items():
            self.stdout.write(f"step {step}: " + ", ".join(f"{k} {per[str(k)]}" for k in CellState))

    def do_seats(self, options: dict[str, Any]) -> None:
        klass = self._class(options["id"])
        actor = self._user(options["actor"]) if options["actor"] else klass.owner
        report = act_on_seats(actor, klass, options["seat"], options["seat_action"], options["step"])
        self.stdout.write(f"{report.action}: done {report.done}")
        for seat, why in report.skipped.items():
            self.stdout.write(f"seat {seat} skipped: {why}")

    def do_export(self, options: dict[str, Any]) -> None:
        klass = self._class(options["id"])
        text = (
            export.as_csv(klass)
            if options["format"] == "csv"
            else json.dumps(export.as_json(klass), ensure_ascii=False)
        )
        if options["output"]:
            Path(options["output"]).write_text(text, encoding="utf-8")
        else:
            self.stdout.write(text, ending="")
