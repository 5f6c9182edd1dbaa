"""`manage.py labs check` validates every lab folder; `manage.py labs list` shows the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labs.catalog import DEFAULT_ROOT, Catalog, display_path, load_catalog


class Command(BaseCommand):
    help = "Validate (check) or list the labs in content/labs/."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["check", "list"])
        parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="lab folder root (default: content/labs)")

    def handle(self, *args: Any, **options: Any) -> None:
        root: Path = options["root"]
        if not root.is_dir():
            raise CommandError(f"{root} is not a directory")
        catalog = load_catalog(root)
        if options["action"] == "list":
            self._list(catalog)
        else:
            self._check(catalog, root)

    def _list(self, catalog: Catalog) -> None:
        for lab in catalog.labs.values():
            self.stdout.write(
                f"{lab.slug:<24} {lab.difficulty:<12} {lab.profile:<9} {len(lab.steps):>2} steps "
                f"{lab.duration_min:>3} min  {lab.title.en}"
            )
        if catalog.errors:
            invalid = sorted({e.lab for e in catalog.errors})
            self.stdout.write(self.style.WARNING(f"not offered (invalid): {', '.join(invalid)}; run `labs check`"))

    def _check(self, catalog: Catalog, root: Path) -> None:
        for error in catalog.errors:
            self.stderr.write(str(error))
        invalid = sorted({e.lab for e in catalog.errors})
        if invalid:
            raise CommandError(
                f"{len(invalid)} invalid lab(s) in {display_path(root)}: {', '.join(invalid)} "
                f"({len(catalog.errors)} error(s)); {len(catalog.labs)} valid"
            )
        self.stdout.write(self.style.SUCCESS(f"{len(catalog.labs)} lab(s) valid in {display_path(root)}"))
