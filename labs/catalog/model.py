"""The lab catalog's data: frozen dataclasses built from `content/labs/` by the loader.

Nothing here touches Django or libvirt: the web tier renders these, the host agent verifies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

LANGUAGES: tuple[str, ...] = ("en", "zh")
DIFFICULTIES: tuple[str, ...] = ("intro", "intermediate", "advanced")
Difficulty = Literal["intro", "intermediate", "advanced"]
# Guest commands never run without a deadline; authors may lower or raise it within this range.
DEFAULT_COMMAND_TIMEOUT_S = 30.0
MAX_COMMAND_TIMEOUT_S = 300.0


def content_lang(lang: str) -> str:
    """The content language ("en" or "zh") for a UI language code such as "zh-hans" or "en-us"."""
    return "zh" if lang.lower().startswith("zh") else "en"


@dataclass(frozen=True)
class LocalizedText:
    """One text in every UI language."""

    en: str
    zh: str

    def get(self, lang: str) -> str:
        """The text in `lang` ("zh", "zh-hans", "en", ...); English for anything else."""
        return self.zh if content_lang(lang) == "zh" else self.en


@dataclass(frozen=True, kw_only=True)
class Assertion:
    """One condition of a check; `message` is shown when it fails."""

    message: LocalizedText
    kind: ClassVar[str]  # the key that introduces this assertion in step.yaml
    # Whether the verdict rests on what the guest reports (its agent, its programs): a learner with
    # root in the guest can fake those. Host-side kinds read the VM from outside (libvirt).
    trusts_guest: ClassVar[bool]


@dataclass(frozen=True, kw_only=True)
class JsonEquals:
    """`path` (dot-separated keys and list indexes) in the command's JSON stdout equals `equals`."""

    path: str
    equals: str | int | float | bool | None


@dataclass(frozen=True, kw_only=True)
class GuestAssertion(Assertion):
    """Run an author-written command in the guest over the control channel (guest agent)."""

    run: str
    exit_code: int = 0
    stdout_regex: str | None = None
    json: JsonEquals | None = None
    timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S

    kind: ClassVar[str] = "guest"
    trusts_guest: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class FileSha256Assertion(Assertion):
    """A guest file, read through the agent and hashed on the host, has this SHA-256.

    The guest's own tools are not involved, so a replaced `sha256sum` cannot fake it; the bytes still
    come from the guest agent, which a learner with root can replace.
    """

    path: str
    sha256: str  # lower-case hex; step.yaml may give `content:` instead and the loader hashes it

    kind: ClassVar[str] = "file_sha256"
    trusts_guest: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class DomainXmlAssertion(Assertion):
    """An XPath 1.0 expression on the live domain XML (read by libvirt on the host).

    `equals`: the expression's string value; `count`: the number of nodes it selects.
    """

    xpath: str
    equals: str | None = None
    count: int | None = None

    kind: ClassVar[str] = "domain_xml"
    trusts_guest: ClassVar[bool] = False


@dataclass(frozen=True, kw_only=True)
class BlockInfoAssertion(Assertion):
    """Sizes of one disk as the host sees them (libvirt blockInfo): the guest cannot fake them.

    `allocation` grows only when the guest really writes to the disk.
    """

    target: str  # vda, vdb, ...
    min_allocation_mib: float | None = None
    max_allocation_mib: float | None = None
    capacity_mib: int | None = None

    kind: ClassVar[str] = "block_info"
    trusts_guest: ClassVar[bool] = False


@dataclass(frozen=True)
class Check:
    """Every assertion must hold for the step to pass."""

    assertions: tuple[Assertion, ...]


@dataclass(frozen=True)
class Step:
    """One step of a lab, in order. `number` is 1-based; its page anchor is `step-<number>`."""

    lab_slug: str
    number: int
    name: str  # folder name, e.g. "03-backing"
    title: LocalizedText
    instructions: LocalizedText  # Markdown source (en.md / zh.md)
    setup: tuple[str, ...]
    check: Check
    hints: tuple[LocalizedText, ...]
    solution: tuple[str, ...]
    path: Path = field(compare=False)

    @property
    def anchor(self) -> str:
        """The id docs link to: `[text](lab:<slug>#step-N)`."""
        return f"step-{self.number}"


@dataclass(frozen=True)
class Lab:
    """A complete, validated lab."""

    slug: str
    title: LocalizedText
    summary: LocalizedText
    duration_min: int
    difficulty: Difficulty
    profile: str  # a name in labs.profiles.PROFILES
    docs: tuple[str, ...]
    steps: tuple[Step, ...]
    path: Path = field(compare=False)

    def step(self, number: int) -> Step:
        """Step `number` (1-based); IndexError when out of range."""
        if not 1 <= number <= len(self.steps):
            raise IndexError(f"lab {self.slug!r} has steps 1..{len(self.steps)}, not {number}")
        return self.steps[number - 1]


@dataclass(frozen=True)
class LabProblem:
    """Why a lab is not offered: the file, the field inside it, and what is wrong."""

    lab: str  # the lab folder name
    file: str  # path as shown to authors (relative to the repository when inside it)
    field: str  # e.g. "check[1].guest.stdout_regex"; "" for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}" if self.field else f"{self.file}: {self.message}"


@dataclass(frozen=True)
class Catalog:
    """Valid labs by slug (in display order) and the errors of the labs left out."""

    labs: dict[str, Lab]
    errors: list[LabProblem]

    def get(self, slug: str) -> Lab | None:
        """The lab called `slug`, or None if there is no valid one."""
        return self.labs.get(slug)
