"""Waiting with a deadline: `poll()` for "try until it works or time is up", `Deadline` for reads.

Every wait in the host side goes through these two, so a timeout is measured one way (the
monotonic clock), the last try happens at the deadline rather than an interval before it, and a
shutdown event cuts a wait short instead of being noticed a sleep later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """A moment `timeout_s` seconds after creation, on the monotonic clock.

    For loops whose every step blocks for a bounded time (reading a stream until a marker): pass
    `remaining()` (or less) to each blocking call and stop once it reaches 0.
    """

    __slots__ = ("_at", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._at = time.monotonic() + timeout_s

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._at - time.monotonic())

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self._at


def poll(
    attempt: Callable[[], T],
    *,
    timeout_s: float,
    interval_s: float,
    max_interval_s: float | None = None,
    stop: threading.Event | None = None,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T | None:
    """Call `attempt` until it returns something truthy, and return that; None on timeout or stop.

    `attempt` runs at once, then after each `interval_s` (or what is left of `timeout_s`, so the
    last try is at the deadline) until `timeout_s` has passed; with `timeout_s=0` it runs once.
    With `max_interval_s` the interval doubles after each try up to that bound, so quick
    successes are seen quickly and long waits do not spin. A set `stop` event ends the wait at
    once, without another try. Exceptions of the `retry_on` types count as a failed try; any
    other exception propagates from the try that raised it.
    """
    deadline = Deadline(timeout_s)
    interval = interval_s
    while stop is None or not stop.is_set():
        try:
            result = attempt()
        except retry_on:
            pass
        else:
            if result:
                return result
        remaining = deadline.remaining()
        if remaining <= 0:
            return None
        pause = min(interval, remaining)
        if stop is not None:
            stop.wait(pause)
        else:
            time.sleep(pause)
        if max_interval_s is not None:
            interval = min(interval * 2, max_interval_s)
    return None
