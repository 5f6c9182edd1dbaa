"""Markers on a session's timeline, from any process: pushed to a Redis list the recorder drains.

Checks and reverts run in the host's workers, transitions in web and host processes alike, and the
recorder in the host agent's console relay: Redis is what they share. Each marker carries the wall
time it happened at, so the recorder places it where it belongs even if it drains it late.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from labs import host_registry
from labs.redis_names import timeline_marks_key

log = logging.getLogger(__name__)
KEY_TTL_S = 24 * 3600  # a session whose recorder never runs (failed in the queue) leaves nothing behind
REASON_MAX_CHARS = 500  # a check's reason comes from the lab's messages and the guest's output: bounded


def mark(session_id: str, kind: str, **fields: Any) -> None:
    """Record that `kind` happened now; a Redis outage loses the marker, never the action."""
    facts = {name: value for name, value in fields.items() if value is not None}
    payload = json.dumps({"at": time.time(), "kind": kind, **facts}, ensure_ascii=False)
    try:
        client = host_registry.redis_client()
        pipe = client.pipeline(transaction=False)
        pipe.rpush(timeline_marks_key(session_id), payload)
        pipe.expire(timeline_marks_key(session_id), KEY_TTL_S)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("timeline marker %s of %s lost: Redis unavailable (%s)", kind, session_id, exc)


def check_reason(messages: list[str]) -> str:
    return "; ".join(messages)[:REASON_MAX_CHARS]


def drain(client: redis.Redis, session_id: str) -> list[dict[str, Any]]:
    """Take every pending marker of the session, oldest first (malformed ones are dropped)."""
    pipe = client.pipeline(transaction=True)
    pipe.lrange(timeline_marks_key(session_id), 0, -1)
    pipe.delete(timeline_marks_key(session_id))
    raw, _ = pipe.execute()
    marks = []
    for item in raw:
        try:
            value = json.loads(item)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("at"), int | float) and isinstance(value.get("kind"), str):
            marks.append(value)
    return marks
