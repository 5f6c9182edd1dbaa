"""The anonymous page cache: one entry per page, however many query strings readers invent."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from portal.kb import cache

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("docs")]


def cached_pages(path: str) -> list[str]:
    """The keys of the whole pages the real cache object holds for `path` (fragments aside)."""
    # LocMemCache keeps its entries in a private dict: the only way to see what memory holds.
    entries: dict[str, object] = vars(cache.fragments)["_cache"]
    return [key for key in entries if ":html:" in key and f":{path}" in key]


def next_field(html: str) -> str:
    found = re.search(r'name="next" type="hidden" value="([^"]*)"', html)
    assert found is not None
    return found.group(1)


def test_junk_query_strings_share_one_cached_page(client: Client) -> None:
    plain = client.get("/docs/en/vfio/").content.decode()
    for i in range(200):
        resp = client.get(f"/docs/en/vfio/?x={i}&utm_source=junk{i}")
        assert resp.status_code == 200
    assert len(cached_pages("/docs/en/vfio/")) == 1
    html = resp.content.decode()
    # The same page, whose language form still returns the reader to the URL they asked for.
    assert next_field(html) == "/docs/en/vfio/?x=199&amp;utm_source=junk199"
    assert next_field(plain) == "/docs/en/vfio/"
    assert re.sub(r'value="[^"]*"', "", html) == re.sub(r'value="[^"]*"', "", plain)


def test_the_first_readers_query_string_is_not_served_to_others(client: Client) -> None:
    first = client.get('/docs/en/mdev/?q="><script>alert(1)</script>').content.decode()
    assert "<script>alert(1)" not in first
    assert next_field(first) == "/docs/en/mdev/?q=%22%3E%3Cscript%3Ealert(1)%3C/script%3E"
    later = client.get("/docs/en/mdev/").content.decode()
    assert next_field(later) == "/docs/en/mdev/"
    assert "alert" not in later
    assert "\x00" not in first + later
