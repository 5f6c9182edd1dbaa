"""The lab catalog: labs as data in `content/labs/` (format: content/labs/FORMAT.md).

catalog = get_catalog()           # cached per process, reloaded when files change
lab = catalog.labs["qemu-img"]    # only valid labs are here
catalog.errors                    # LabProblem(file, field, message) for the rest
"""

from .loader import DEFAULT_ROOT, display_path, get_catalog, load_catalog
from .model import (
    DIFFICULTIES,
    LANGUAGES,
    Assertion,
    BlockInfoAssertion,
    Catalog,
    Check,
    DomainXmlAssertion,
    FileSha256Assertion,
    GuestAssertion,
    JsonEquals,
    Lab,
    LabProblem,
    LocalizedText,
    Step,
)

__all__ = [
    "DEFAULT_ROOT",
    "DIFFICULTIES",
    "LANGUAGES",
    "Assertion",
    "BlockInfoAssertion",
    "Catalog",
    "Check",
    "DomainXmlAssertion",
    "FileSha256Assertion",
    "GuestAssertion",
    "JsonEquals",
    "Lab",
    "LabProblem",
    "LocalizedText",
    "Step",
    "display_path",
    "get_catalog",
    "load_catalog",
]
