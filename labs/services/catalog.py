"""The labs this deployment offers: the catalog under settings.CONTENT_DIR/labs."""

from __future__ import annotations

from django.conf import settings

from labs.catalog import Catalog, Lab, get_catalog


def catalog() -> Catalog:
    return get_catalog(settings.CONTENT_DIR / "labs")


def get_lab(slug: str) -> Lab | None:
    """The valid lab called `slug`, or None."""
    return catalog().get(slug)


def require_lab(slug: str) -> Lab:
    lab = get_lab(slug)
    if lab is None:
        raise LookupError(f"no lab {slug!r} is offered")
    return lab
