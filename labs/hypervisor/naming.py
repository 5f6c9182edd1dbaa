"""How VirtLab names and tags what it creates, so nothing else on a host is ever touched."""

from __future__ import annotations

import re

DOMAIN_PREFIX = "virtlab-"
METADATA_NS = "https://virtlab.dev/xmlns/session/1"
METADATA_PREFIX = "virtlab"

# Session ids become domain names and directory names: keep them to a safe, bounded alphabet.
_SESSION_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_session_id(session_id: str) -> str:
    """Return `session_id` if it is safe for names and paths, else raise ValueError."""
    if not _SESSION_ID.fullmatch(session_id):
        raise ValueError(f"invalid session id {session_id!r}: use [a-z0-9-], at most 63 chars")
    return session_id


def is_session_id(value: str) -> bool:
    """Whether `value` is a well-formed session id."""
    return bool(_SESSION_ID.fullmatch(value))


def check_snapshot_name(name: str) -> str:
    """Return `name` if it is a safe snapshot name, else raise ValueError."""
    if not _SNAPSHOT_NAME.fullmatch(name):
        raise ValueError(f"invalid snapshot name {name!r}: use [A-Za-z0-9_.-], at most 64 chars")
    return name


def domain_name(session_id: str) -> str:
    """The libvirt domain name for a session."""
    return DOMAIN_PREFIX + check_session_id(session_id)


def session_of(name: str) -> str | None:
    """The session id encoded in a domain name, or None for a domain VirtLab did not name."""
    if not name.startswith(DOMAIN_PREFIX):
        return None
    rest = name[len(DOMAIN_PREFIX) :]
    return rest if _SESSION_ID.fullmatch(rest) else None
