"""Every Redis key and channel-layer group the web side and the host side share, in one place.

Both sides import this module (and `labs.task_calls`); neither imports the other for a name. A
key's layout is part of the seam between them: change it here, and both sides follow.
"""

from __future__ import annotations

# The host registry: one advert per host agent, expiring when it stops refreshing it.
ADVERT_PREFIX = "virtlab:host:"
# Serialises placement decisions across web processes so two starts cannot take one slot.
PLACEMENT_LOCK = "virtlab:placement"


def start_lock(user_id: int) -> str:
    """Held while one learner's start is decided (a double click must not pass the limit twice)."""
    return f"virtlab:start:{user_id}"


def events_group(session_id: str) -> str:
    """Channel-layer group of a session's page: transitions, progress stages, step results."""
    return f"lab.{session_id}.events"


def terminal_group(session_id: str) -> str:
    """Channel-layer group of a session's terminal: console output and "gone"."""
    return f"lab.{session_id}.term"


def user_group(user_id: int) -> str:
    """Channel-layer group every websocket of one user joins: told to close when the user logs out."""
    return f"user.{user_id}"


def sockets_key(user_id: int, kind: str) -> str:
    """The user's open websockets of one kind ("terminal", "events"): a sorted set of channel names
    scored by when each claim lapses unless refreshed (a crashed web process leaves none for long)."""
    return f"virtlab:ws:{user_id}:{kind}"


def watchers_key(session_id: str) -> str:
    """Read-only observers with the session's terminal open: a sorted set of channel names scored
    by when each lapses unless refreshed (the learner's page says someone is watching)."""
    return f"virtlab:term:{session_id}:watchers"


def buffer_key(session_id: str) -> str:
    """The console's scrollback (bounded by the host's console relay)."""
    return f"virtlab:term:{session_id}:buf"


def offset_key(session_id: str) -> str:
    """Total bytes ever relayed: lets a reconnecting client splice scrollback and live bytes."""
    return f"virtlab:term:{session_id}:off"


def input_key(session_id: str) -> str:
    """Keystrokes on their way to the guest: a list the web side pushes and the relay pops."""
    return f"virtlab:term:{session_id}:in"


def size_key(session_id: str) -> str:
    """The terminal size the page last reported, "<cols> <rows>" (a list holding only the latest)."""
    return f"virtlab:term:{session_id}:size"


def hold_key(session_id: str) -> str:
    """While set, the relay keeps keystrokes queued (a checkpoint of the step is being taken)."""
    return f"virtlab:term:{session_id}:hold"


def timeline_marks_key(session_id: str) -> str:
    """Markers for a session's timeline (state, step, check, checkpoint, revert), JSON each, pushed by
    whichever process saw the event and drained by the host's recorder (labs/host/recorder.py)."""
    return f"virtlab:timeline:{session_id}:marks"


def session_keys(session_id: str) -> list[str]:
    """Every key one session's terminal uses: deleted as soon as the session is destroyed."""
    return [f(session_id) for f in (buffer_key, offset_key, input_key, size_key, hold_key)]


def wake_key(host: str) -> str:
    """Pushed to make a host's console relay look at its sessions now rather than at its next poll."""
    return f"virtlab:relay:{host}:wake"


def host_missing_key(host: str) -> str:
    """Since when (epoch seconds) a host with live sessions has had no advert: past LABS_HOST_LOST_S
    it is lost and its sessions end (labs/services/lost_hosts.py)."""
    return f"virtlab:host-missing:{host}"
