"""manage.py docs build | docs search "<query>" [--lang en|zh] [--section kernel]"""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from portal.kb.build import build_docs
from portal.kb.search import search


class Command(BaseCommand):
    help = "Build the knowledge base from content/docs, or query its search index."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        build = sub.add_parser("build", help="render changed pages and update the search index")
        build.add_argument("--content", type=Path, help="content root (default: settings.CONTENT_DIR)")
        build.add_argument("--force", action="store_true", help="re-render every page")
        find = sub.add_parser("search", help="run a search query and print the ranked results")
        find.add_argument("query")
        find.add_argument("--lang", choices=["en", "zh"])
        find.add_argument("--section")
        find.add_argument("--limit", type=int, default=10)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "build":
            self._build(options["content"], options["force"])
        else:
            self._search(options["query"], options["lang"], options["section"], options["limit"])

    def _build(self, content: Path | None, force: bool) -> None:
        report = build_docs(content, force=force)
        for err in report.errors:
            self.stderr.write(self.style.ERROR(f"error: {err.path}: field '{err.field}': {err.message} (skipped)"))
        for warning in report.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        for name in report.rendered:
            self.stdout.write(f"rendered {name}")
        for name in report.removed:
            self.stdout.write(f"removed {name}")
        self.stdout.write(
            f"docs: {len(report.rendered)} rendered, {report.unchanged} unchanged, {len(report.removed)} removed, "
            f"{len(report.errors)} invalid, {report.indexed} indexed, {len(report.labs_indexed)} lab pages indexed "
            f"in {report.seconds:.2f}s "
            f"(build {report.build_hash[:12]})"
        )
        if report.errors:
            raise CommandError(f"{len(report.errors)} page(s) invalid and skipped")

    def _search(self, query: str, lang: str | None, section: str | None, limit: int) -> None:
        for i, r in enumerate(search(query, lang=lang, section=section, limit=limit), 1):
            self.stdout.write(f"{i:2}. {r.score:8.3f} {r.lang}/{r.key}#{r.anchor}  {r.snippet_html[:160]}")
