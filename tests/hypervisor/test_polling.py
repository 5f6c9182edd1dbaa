"""labs.hypervisor.polling: the one wait-with-a-deadline helper of the host side (real clock, real threads)."""

from __future__ import annotations

import threading
import time

import pytest

from labs.hypervisor.polling import Deadline, poll


class Attempts:
    """A callable that fails until its `succeed_on`-th call, recording when each call happened."""

    def __init__(self, succeed_on: int | None = None, raises: BaseException | None = None) -> None:
        self.succeed_on, self.raises = succeed_on, raises
        self.times: list[float] = []

    def __call__(self) -> str | None:
        self.times.append(time.monotonic())
        if self.succeed_on is not None and len(self.times) >= self.succeed_on:
            return "done"
        if self.raises is not None:
            raise self.raises
        return None

    @property
    def calls(self) -> int:
        return len(self.times)


def test_poll_returns_the_first_truthy_result_without_waiting_out_the_timeout() -> None:
    attempt = Attempts(succeed_on=3)
    started = time.monotonic()
    assert poll(attempt, timeout_s=10, interval_s=0.01) == "done"
    assert attempt.calls == 3
    assert time.monotonic() - started < 2


def test_poll_succeeding_at_once_does_not_sleep() -> None:
    started = time.monotonic()
    assert poll(lambda: 42, timeout_s=10, interval_s=5) == 42
    assert time.monotonic() - started < 1


def test_poll_returns_none_after_the_timeout_with_a_last_try_at_the_deadline() -> None:
    attempt = Attempts()
    started = time.monotonic()
    assert poll(attempt, timeout_s=0.5, interval_s=0.4) is None
    # Tries at 0, 0.4 and 0.5: the last pause is cut to what is left of the timeout, so the last
    # try is at the deadline, neither skipped nor a whole interval (0.8 s) late.
    assert attempt.calls == 3
    assert attempt.times[-1] - started >= 0.5
    assert time.monotonic() - started < 0.75


def test_poll_with_zero_timeout_tries_exactly_once() -> None:
    attempt = Attempts()
    assert poll(attempt, timeout_s=0, interval_s=1) is None
    assert attempt.calls == 1


def test_poll_backs_off_to_max_interval() -> None:
    # Doubling from 10 ms to a 50 ms cap over 1 s is about 22 tries; without backoff it would be
    # ~100, without the cap ~8 (sleeps never end early, so load only lowers the count).
    attempt = Attempts()
    assert poll(attempt, timeout_s=1.0, interval_s=0.01, max_interval_s=0.05) is None
    assert 12 <= attempt.calls <= 30
    gaps = [b - a for a, b in zip(attempt.times, attempt.times[1:], strict=False)]
    assert gaps[0] >= 0.01
    assert all(gap >= 0.05 for gap in gaps[3:-1])  # 10, 20, 40 ms, then 50 ms until the deadline


def test_poll_stops_at_once_when_the_stop_event_is_set() -> None:
    stop = threading.Event()
    attempt = Attempts()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert poll(attempt, timeout_s=30, interval_s=5, stop=stop) is None
    # Woken from its 5 s pause by the event, and no further try after it was set.
    assert time.monotonic() - started < 2
    assert attempt.calls == 1


def test_poll_does_not_try_once_stop_is_already_set() -> None:
    stop = threading.Event()
    stop.set()
    attempt = Attempts(succeed_on=1)
    assert poll(attempt, timeout_s=5, interval_s=0.01, stop=stop) is None
    assert attempt.calls == 0


def test_poll_retries_the_exceptions_given_and_returns_the_later_success() -> None:
    attempt = Attempts(succeed_on=3, raises=ConnectionError("not yet"))
    assert poll(attempt, timeout_s=5, interval_s=0.01, retry_on=(OSError,)) == "done"
    assert attempt.calls == 3


def test_poll_swallows_retried_exceptions_until_the_timeout() -> None:
    attempt = Attempts(raises=ConnectionError("never"))
    assert poll(attempt, timeout_s=0.1, interval_s=0.02, retry_on=(ConnectionError,)) is None
    assert attempt.calls > 1


def test_poll_propagates_other_exceptions_from_the_first_try() -> None:
    attempt = Attempts(succeed_on=3, raises=ValueError("bug"))
    with pytest.raises(ValueError, match="bug"):
        poll(attempt, timeout_s=5, interval_s=0.01, retry_on=(ConnectionError,))
    assert attempt.calls == 1


def test_poll_without_retry_on_propagates_every_exception() -> None:
    attempt = Attempts(succeed_on=3, raises=ConnectionError("down"))
    with pytest.raises(ConnectionError):
        poll(attempt, timeout_s=5, interval_s=0.01)
    assert attempt.calls == 1


def test_deadline_counts_down_to_zero_and_expires() -> None:
    deadline = Deadline(0.2)
    assert not deadline.expired()
    assert 0.1 < deadline.remaining() <= 0.2
    time.sleep(0.25)
    assert deadline.expired()
    assert deadline.remaining() == 0.0
