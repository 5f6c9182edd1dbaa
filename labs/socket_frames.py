"""The pieces of a bounded websocket that hold no connection: a byte-rate token bucket, the outbox
of frames waiting for one client, and the checks of a frame coming in."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from dataclasses import dataclass
from typing import Any


class TokenBucket:
    """`rate` bytes per second sustained, up to `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    def take(self, n: int) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if n > self.tokens:
            return False
        self.tokens -= n
        return True

    def wait_s(self, n: int) -> float:
        """Seconds until `n` bytes (at most a burst) could be taken."""
        return max(0.0, (min(n, self.burst) - self.tokens) / self.rate)


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


class Outbox:
    """Frames waiting for one client, in order; console bytes coalesce into the frame before them."""

    def __init__(self) -> None:
        self.items: collections.deque[str | bytearray | Close] = collections.deque()
        self.size = 0  # bytes waiting (what the pending limit bounds)
        self.ready = asyncio.Event()

    def put(self, item: str | bytes | Close) -> None:
        if isinstance(item, bytes) and self.items and isinstance(self.items[-1], bytearray):
            self.items[-1] += item
        else:
            self.items.append(bytearray(item) if isinstance(item, bytes) else item)
        self.size += 0 if isinstance(item, Close) else len(item)
        self.ready.set()

    def clear(self) -> None:
        self.items.clear()
        self.size = 0

    async def get(self) -> str | bytes | Close:
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        item = self.items.popleft()
        if isinstance(item, Close):
            return item
        self.size -= len(item)
        return bytes(item) if isinstance(item, bytearray) else item


def frame_size(text_data: str | None, bytes_data: bytes | None) -> int:
    if bytes_data is not None:
        return len(bytes_data)
    text = text_data or ""
    return len(text) if text.isascii() else len(text.encode(errors="surrogatepass"))


class BadFrame(Exception):
    """A frame the socket cannot use: answered with an error message, then ignored."""


def parse_control(text: str) -> dict[str, Any]:
    """A text frame's JSON object with a string "type"; BadFrame saying what is wrong otherwise."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested past the parser's depth
        raise BadFrame('Not JSON: a text frame is a JSON object such as {"type": "resize", …}.') from None
    if not isinstance(message, dict):
        raise BadFrame(f"A text frame must be a JSON object, not {type(message).__name__}.")
    if not isinstance(message.get("type"), str):
        raise BadFrame('A text frame needs a string "type".')
    return message
