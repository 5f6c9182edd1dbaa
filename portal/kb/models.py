"""Prepared knowledge-base pages: the request path reads only these rows."""

from __future__ import annotations

from django.db import models


class DocPageQuerySet(models.QuerySet["DocPage"]):
    def in_lang(self, lang: str) -> DocPageQuerySet:
        return self.filter(lang=lang)

    def by_position(self) -> DocPageQuerySet:
        # Section order comes from content.SECTIONS; the DB sorts by the prepared rank.
        return self.order_by("section_rank", "order", "slug")


class DocPage(models.Model):
    lang = models.CharField(max_length=5)
    slug = models.SlugField(max_length=100)
    title = models.CharField(max_length=300)
    section = models.CharField(max_length=40)
    section_rank = models.PositiveSmallIntegerField(default=0)
    order = models.IntegerField(default=0)
    summary = models.TextField(blank=True)
    html = models.TextField()
    toc_json = models.JSONField(default=list)
    sections_json = models.JSONField(default=list)
    anchors = models.JSONField(default=list)  # every heading id: what doc:slug#anchor links may name
    labs = models.JSONField(default=list)
    related = models.JSONField(default=list)
    content_hash = models.CharField(max_length=64)  # of the file and renderer version: skip unchanged
    source_hash = models.CharField(max_length=12, blank=True)  # ZH: EN hash it was translated from
    en_hash = models.CharField(max_length=12, blank=True)  # ZH: current EN hash (outdated if differs)
    updated = models.DateField(null=True, blank=True)
    built_at = models.DateTimeField(auto_now=True)

    objects = DocPageQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["lang", "slug"], name="kb_docpage_lang_slug")]

    def __str__(self) -> str:
        return f"{self.lang}/{self.slug}"

    @property
    def outdated(self) -> bool:
        return self.lang != "en" and bool(self.en_hash) and self.source_hash != self.en_hash


class DocBuild(models.Model):
    """One row: the hash of the current build (cache key) and the glossary used by search."""

    build_hash = models.CharField(max_length=64)
    glossary = models.JSONField(default=list)
    built_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.build_hash[:12]


class SearchPage(models.Model):
    """One searchable page: a doc page or a lab, in one language. Its sections (a doc's headings, a
    lab's steps) are rows of the search index keyed by this id, so nothing per page is held in the
    web processes' memory."""

    class Kind(models.TextChoices):
        DOC = "doc"
        LAB = "lab"

    kind = models.CharField(max_length=3, choices=Kind.choices)
    lang = models.CharField(max_length=5)
    slug = models.SlugField(max_length=100)
    section = models.CharField(max_length=40, blank=True)  # docs' section; "" for labs
    title = models.CharField(max_length=300)
    summary = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64, blank=True)  # labs: re-indexed when it changes

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "lang", "slug"], name="kb_searchpage_key")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.lang}/{self.slug}"
