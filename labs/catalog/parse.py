"""lab.yaml and step.yaml → dataclasses, with every schema error named by file and field."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from lxml import etree

from .fields import FieldReader
from .model import (
    DIFFICULTIES,
    MAX_COMMAND_TIMEOUT_S,
    Assertion,
    BlockInfoAssertion,
    Check,
    DomainXmlAssertion,
    FileSha256Assertion,
    GuestAssertion,
    JsonEquals,
    LocalizedText,
)
from .patterns import PatternError, compile_output_regex

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
STEP_NAME_RE = re.compile(r"^[0-9]{2}-[a-z0-9][a-z0-9-]*$")
TARGET_RE = re.compile(r"^vd[a-z]$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
JSON_PATH_RE = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")

LAB_REQUIRED = ("slug", "title", "summary", "duration_min", "difficulty", "profile", "docs", "steps")
STEP_REQUIRED = ("title", "check", "solution")
STEP_OPTIONAL = ("setup", "hints")
ASSERTION_KINDS = ("guest", "file_sha256", "domain_xml", "block_info")


def parse_lab_meta(reader: FieldReader, data: Any) -> dict[str, Any] | None:
    """Validate lab.yaml's fields one by one; the cross-file checks are the loader's."""
    fields = reader.mapping(data, "", LAB_REQUIRED)
    if fields is None:
        return None
    meta = {
        "slug": _slug(reader, fields["slug"]),
        "title": reader.localized(fields["title"], "title"),
        "summary": reader.localized(fields["summary"], "summary"),
        "duration_min": reader.integer(fields["duration_min"], "duration_min", 1, 600),
        "difficulty": reader.choice(fields["difficulty"], "difficulty", DIFFICULTIES),
        "profile": reader.text(fields["profile"], "profile"),
        "docs": reader.text_list(fields["docs"], "docs"),
        "steps": reader.text_list(fields["steps"], "steps", allow_empty_list=False),
    }
    return None if any(value is None for value in meta.values()) else meta


def _slug(reader: FieldReader, value: Any) -> str | None:
    slug = reader.text(value, "slug")
    if slug is not None and not SLUG_RE.match(slug):
        reader.error("slug", f"{slug!r} must be lower-case letters, digits and dashes")
        return None
    return slug


def parse_step_yaml(reader: FieldReader, data: Any, disk_targets: tuple[str, ...]) -> dict[str, Any] | None:
    """Validate step.yaml; `disk_targets` are the devices the lab's profile gives (vda, vdb, ...)."""
    fields = reader.mapping(data, "", STEP_REQUIRED, STEP_OPTIONAL)
    if fields is None:
        return None
    step = {
        "title": reader.localized(fields["title"], "title"),
        "setup": reader.text_list(fields.get("setup"), "setup"),
        "check": _check(reader, fields["check"], disk_targets),
        "hints": reader.localized_list(fields["hints"], "hints") if "hints" in fields else (),
        "solution": reader.text_list(fields["solution"], "solution", allow_empty_list=False),
    }
    return None if any(value is None for value in step.values()) else step


def _check(reader: FieldReader, value: Any, disk_targets: tuple[str, ...]) -> Check | None:
    if not isinstance(value, list) or not value:
        reader.error("check", "expected a non-empty list of assertions")
        return None
    assertions = [_assertion(reader, item, f"check[{index}]", disk_targets) for index, item in enumerate(value)]
    if any(a is None for a in assertions):
        return None
    return Check(tuple(a for a in assertions if a is not None))


def _assertion(reader: FieldReader, value: Any, field: str, disk_targets: tuple[str, ...]) -> Assertion | None:
    if not isinstance(value, Mapping):
        reader.error(field, "expected a mapping with one of " + ", ".join(ASSERTION_KINDS) + " and message")
        return None
    kinds = [key for key in value if key in ASSERTION_KINDS]
    if len(kinds) != 1:
        reader.error(field, "needs exactly one of " + ", ".join(ASSERTION_KINDS) + f" (found {len(kinds)})")
        return None
    kind = kinds[0]
    data = reader.mapping(value, field, (kind, "message"))
    if data is None:
        return None
    message = reader.localized(data["message"], f"{field}.message")
    spec_field = f"{field}.{kind}"
    spec = data[kind]
    if kind == "guest":
        built: Assertion | None = _guest(reader, spec, spec_field, message)
    elif kind == "file_sha256":
        built = _file_sha256(reader, spec, spec_field, message)
    elif kind == "domain_xml":
        built = _domain_xml(reader, spec, spec_field, message)
    else:
        built = _block_info(reader, spec, spec_field, message, disk_targets)
    return built if message is not None else None


def _guest(reader: FieldReader, spec: Any, field: str, message: LocalizedText | None) -> Assertion | None:
    data = reader.mapping(spec, field, ("run",), ("exit_code", "stdout_regex", "json", "timeout_s"))
    if data is None:
        return None
    ok = True
    run = reader.text(data["run"], f"{field}.run")
    exit_code = reader.integer(data.get("exit_code", 0), f"{field}.exit_code", 0, 255)
    timeout_s = reader.number(data.get("timeout_s", 30), f"{field}.timeout_s", 1, MAX_COMMAND_TIMEOUT_S)
    regex = data.get("stdout_regex")
    if regex is not None:
        regex = reader.text(regex, f"{field}.stdout_regex")
        try:
            compile_output_regex(regex or "")
        except PatternError as exc:
            reader.error(f"{field}.stdout_regex", f"not a valid regex: {exc}")
            ok = False
    json_equals = None
    if "json" in data:
        json_data = reader.mapping(data["json"], f"{field}.json", ("path", "equals"))
        path = reader.text(json_data["path"], f"{field}.json.path") if json_data else None
        if path is not None and not JSON_PATH_RE.match(path):
            reader.error(f"{field}.json.path", "expected keys and list indexes joined by dots, e.g. snapshots.0.name")
            path = None
        if json_data is not None and not isinstance(json_data["equals"], str | int | float | bool | type(None)):
            reader.error(f"{field}.json.equals", "expected a string, number, boolean or null")
            path = None
        json_equals = JsonEquals(path=path, equals=json_data["equals"]) if json_data and path else None
        ok = ok and json_equals is not None
    if regex is None and "stdout_regex" in data:
        ok = False
    if not ok or run is None or exit_code is None or timeout_s is None or message is None:
        return None
    return GuestAssertion(
        message=message, run=run, exit_code=exit_code, stdout_regex=regex, json=json_equals, timeout_s=timeout_s
    )


def _file_sha256(reader: FieldReader, spec: Any, field: str, message: LocalizedText | None) -> Assertion | None:
    data = reader.mapping(spec, field, ("path",), ("sha256", "content"))
    if data is None:
        return None
    path = reader.text(data["path"], f"{field}.path")
    if path is not None and not path.startswith("/"):
        reader.error(f"{field}.path", "must be an absolute guest path")
        path = None
    if ("sha256" in data) == ("content" in data):
        reader.error(field, "give exactly one of sha256 or content")
        return None
    if "content" in data:
        # The expected hash is computed here, on the host, from the author's text.
        content = reader.text(data["content"], f"{field}.content", allow_empty=True)
        digest = hashlib.sha256(content.encode()).hexdigest() if content is not None else None
    else:
        digest = reader.text(data["sha256"], f"{field}.sha256")
        if digest is not None and not SHA256_RE.match(digest):
            reader.error(f"{field}.sha256", "expected 64 lower-case hex digits")
            digest = None
    if path is None or digest is None or message is None:
        return None
    return FileSha256Assertion(message=message, path=path, sha256=digest)


def _domain_xml(reader: FieldReader, spec: Any, field: str, message: LocalizedText | None) -> Assertion | None:
    data = reader.mapping(spec, field, ("xpath",), ("equals", "count"))
    if data is None:
        return None
    xpath = reader.text(data["xpath"], f"{field}.xpath")
    if xpath is not None:
        try:
            etree.XPath(xpath)
        except etree.XPathSyntaxError as exc:
            reader.error(f"{field}.xpath", f"not a valid XPath expression: {exc}")
            xpath = None
    if ("equals" in data) == ("count" in data):
        reader.error(field, "give exactly one of equals or count")
        return None
    equals = reader.text(data["equals"], f"{field}.equals", allow_empty=True) if "equals" in data else None
    count = reader.integer(data["count"], f"{field}.count", 0) if "count" in data else None
    if xpath is None or message is None or (equals is None and count is None):
        return None
    return DomainXmlAssertion(message=message, xpath=xpath, equals=equals, count=count)


def _block_info(
    reader: FieldReader, spec: Any, field: str, message: LocalizedText | None, disk_targets: tuple[str, ...]
) -> Assertion | None:
    limits = ("min_allocation_mib", "max_allocation_mib", "capacity_mib")
    data = reader.mapping(spec, field, ("target",), limits)
    if data is None:
        return None
    target = reader.text(data["target"], f"{field}.target")
    if target is not None and target not in disk_targets:
        reader.error(f"{field}.target", f"{target!r} is not a disk of this lab's profile ({', '.join(disk_targets)})")
        target = None
    if not any(key in data for key in limits):
        reader.error(field, "give at least one of " + ", ".join(limits))
        return None
    values = {key: reader.number(data[key], f"{field}.{key}", 0) for key in limits if key in data}
    if target is None or message is None or any(v is None for v in values.values()):
        return None
    capacity = values.get("capacity_mib")
    return BlockInfoAssertion(
        message=message,
        target=target,
        min_allocation_mib=values.get("min_allocation_mib"),
        max_allocation_mib=values.get("max_allocation_mib"),
        capacity_mib=int(capacity) if capacity is not None else None,
    )


def disk_targets_of(profile_disks: int) -> tuple[str, ...]:
    """Guest device names of a profile with `profile_disks` disks: vda, vdb, ..."""
    return tuple("vd" + chr(ord("a") + index) for index in range(profile_disks))
