"""manage.py export_timelines <class id> <directory>: every stored session record of a class's seats,
one asciicast v2 file each (<learner>-<lab>-<session>.cast), and an index.json describing them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classes.models import LabClass
from labs.timeline.models import SessionTimeline


class Command(BaseCommand):
    help = "Export the session timelines (.cast records) of a class's seats into a directory."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("class_id", type=int)
        parser.add_argument("directory", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        klass = LabClass.objects.filter(pk=options["class_id"]).first()
        if klass is None:
            raise CommandError(f"no class with id {options['class_id']}")
        out: Path = options["directory"]
        out.mkdir(parents=True, exist_ok=True)
        records = (
            SessionTimeline.objects.filter(session__seats__klass=klass)
            .select_related("session__user").distinct().order_by("session__user__username", "created_at")
        )  # fmt: skip
        index = []
        for record in records.iterator(chunk_size=20):
            session = record.session
            name = f"{session.user.get_username()}-{session.lab_slug}-{session.pk}.cast"
            (out / name).write_text(record.text(), encoding="utf-8")
            index.append({"file": name, "learner": session.user.get_username(), "lab": session.lab_slug,
                          "session": session.pk, "started_at": session.created_at.isoformat(),
                          "duration_s": record.duration_s, "cut": record.cut})  # fmt: skip
        (out / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False), encoding="utf-8")
        self.stdout.write(f"{len(index)} records of class {klass.pk} written to {out}")
