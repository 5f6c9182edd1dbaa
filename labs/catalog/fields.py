"""Typed reading of parsed YAML that records every problem with its file and field.

Each reader method returns the value or None and appends a LabProblem naming the field; the loader
builds a lab only when its files produced no errors, so one pass reports everything at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import LANGUAGES, LabProblem, LocalizedText


class FieldReader:
    """Reads one YAML file's data; `errors` collects what is wrong with it."""

    def __init__(self, lab: str, file: str, errors: list[LabProblem]):
        self.lab = lab
        self.file = file
        self.errors = errors

    def error(self, field: str, message: str) -> None:
        self.errors.append(LabProblem(self.lab, self.file, field, message))

    def mapping(
        self, value: Any, field: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> Mapping[str, Any] | None:
        """A mapping with exactly these keys allowed; missing required and unknown keys are errors."""
        if not isinstance(value, Mapping):
            self.error(field, f"expected a mapping, got {_type_name(value)}")
            return None
        ok = True
        for key in required:
            if key not in value:
                self.error(_join(field, key), "required field is missing")
                ok = False
        for key in value:
            if key not in required and key not in optional:
                allowed = ", ".join(required + optional)
                self.error(_join(field, str(key)), f"unknown field (allowed: {allowed})")
                ok = False
        return value if ok else None

    def text(self, value: Any, field: str, allow_empty: bool = False) -> str | None:
        if not isinstance(value, str):
            self.error(field, f"expected a string, got {_type_name(value)}")
            return None
        if not allow_empty and not value.strip():
            self.error(field, "must not be empty")
            return None
        return value

    def integer(self, value: Any, field: str, minimum: int | None = None, maximum: int | None = None) -> int | None:
        # bool is an int subclass in Python; `true` is never a valid count.
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(field, f"expected an integer, got {_type_name(value)}")
            return None
        return self._in_range(value, field, minimum, maximum)

    def number(
        self, value: Any, field: str, minimum: float | None = None, maximum: float | None = None
    ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(field, f"expected a number, got {_type_name(value)}")
            return None
        return self._in_range(float(value), field, minimum, maximum)

    def _in_range(self, value: Any, field: str, minimum: float | None, maximum: float | None) -> Any:
        if minimum is not None and value < minimum:
            self.error(field, f"must be at least {minimum}")
            return None
        if maximum is not None and value > maximum:
            self.error(field, f"must be at most {maximum}")
            return None
        return value

    def choice(self, value: Any, field: str, choices: tuple[str, ...] | list[str]) -> str | None:
        if not isinstance(value, str) or value not in choices:
            self.error(field, f"{value!r} is not one of {', '.join(choices)}")
            return None
        return value

    def text_list(self, value: Any, field: str, allow_empty_list: bool = True) -> tuple[str, ...] | None:
        if value is None and allow_empty_list:
            return ()
        if not isinstance(value, list):
            self.error(field, f"expected a list of strings, got {_type_name(value)}")
            return None
        if not value and not allow_empty_list:
            self.error(field, "must not be empty")
            return None
        items = [self.text(item, f"{field}[{index}]") for index, item in enumerate(value)]
        return None if any(item is None for item in items) else tuple(item for item in items if item is not None)

    def localized(self, value: Any, field: str) -> LocalizedText | None:
        """`{en: ..., zh: ...}`, both non-empty strings."""
        data = self.mapping(value, field, LANGUAGES)
        if data is None:
            return None
        en, zh = self.text(data["en"], _join(field, "en")), self.text(data["zh"], _join(field, "zh"))
        return LocalizedText(en=en, zh=zh) if en is not None and zh is not None else None

    def localized_list(self, value: Any, field: str) -> tuple[LocalizedText, ...] | None:
        """`{en: [...], zh: [...]}` with the same number of entries: item i is one text in two languages."""
        data = self.mapping(value, field, LANGUAGES)
        if data is None:
            return None
        en, zh = self.text_list(data["en"], _join(field, "en")), self.text_list(data["zh"], _join(field, "zh"))
        if en is None or zh is None:
            return None
        if len(en) != len(zh):
            self.error(field, f"en has {len(en)} entries but zh has {len(zh)}; they must correspond")
            return None
        return tuple(LocalizedText(en=a, zh=b) for a, b in zip(en, zh, strict=True))


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)
