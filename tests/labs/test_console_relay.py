"""The console relay on a real VM: what a flood of console output costs the host's shared parts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from pytest_django import Settings

from labs.host.console_relay import PUBLISH_EVERY_S, Publisher, SessionRelay
from labs.hypervisor import VM, Hypervisor
from labs.redis_names import input_key
from tests import lab_stack


class Sent(Publisher):
    """What the relay publishes, as the channel layer would get it (the consumers' side of it has
    tests of its own: test_consumers, test_terminal_limits)."""

    def __init__(self) -> None:  # no event loop: nothing leaves the process
        self.messages: list[tuple[float, bytes]] = []
        self.lock = threading.Lock()

    def send(self, group: str, message: dict[str, Any]) -> None:
        with self.lock:
            self.messages.append((time.monotonic(), message["data"]))

    def since(self, started: float) -> list[bytes]:
        with self.lock:
            return [data for at, data in self.messages if at >= started]

    def wait_for(self, text: bytes, started: float, timeout: float = 30) -> list[bytes]:
        lab_stack.wait_for(lambda: text in b"".join(self.since(started)), timeout, repr(text))
        return self.since(started)


@pytest.fixture
def relayed(booted_vm: Callable[[str], VM], hv: Hypervisor, settings: Settings) -> Iterator[tuple[VM, Sent, str]]:
    vm = booted_vm("tiny")
    with lab_stack.private_redis() as url:
        lab_stack.point_settings_at_redis(settings, url)
        settings.LABS_TIMELINE_ENABLED = False
        sent = Sent()
        relay = SessionRelay(hv, vm.session_id, vm.session_id, sent)
        relay.start()
        try:
            yield vm, sent, url
        finally:
            relay.stop()


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the relay records the learner's activity
def test_a_flood_of_output_goes_out_a_few_times_a_second_and_a_key_at_once(relayed: tuple[VM, Sent, str]) -> None:
    vm, sent, redis_url = relayed
    typed = redis.Redis.from_url(redis_url)
    started = time.monotonic()
    typed.rpush(input_key(vm.session_id), b"echo rel''ay-ready\r")
    sent.wait_for(b"relay-ready", started)

    time.sleep(1)  # quiet: a key's echo is published at once, alone
    started = time.monotonic()
    typed.rpush(input_key(vm.session_id), b"x")
    assert sent.wait_for(b"x", started, 10) == [b"x"]

    typed.rpush(input_key(vm.session_id), b"\x15yes\r")
    sent.wait_for(b"y\r\ny\r\ny\r\n", started)
    flood = time.monotonic()
    time.sleep(3)
    during = sent.since(flood)
    typed.rpush(input_key(vm.session_id), b"\x03")
    # `yes` comes in ~13-byte reads, thousands a second: each published alone cost a Redis append
    # and a message through the publisher every relay of the host shares.
    rate = len(during) / 3
    flowed = sum(map(len, during)) / 3
    print(f"\n`yes`: {rate:.0f} publishes/s, {flowed / 1024:.1f} KiB/s")
    assert flowed > 8 * 1024, "the flood reached the relay"
    assert rate <= 1.25 / PUBLISH_EVERY_S
