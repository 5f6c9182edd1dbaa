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
from tests import lab_stack, servers

# Real VMs; the relay records each learner's activity in the DB.
pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Sent(Publisher):
    """What the relay publishes, as the channel layer would get it (the consumers' side of it has
    tests of its own: test_consumers, test_terminal_limits, test_terminal_backpressure)."""

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
        servers.wait_for(lambda: text in b"".join(self.since(started)), timeout, repr(text))
        return self.since(started)


@pytest.fixture
def relay_to(settings: Settings) -> Iterator[Callable[[VM], tuple[Sent, redis.Redis]]]:
    """Factory: a real SessionRelay for a VM, with its own private Redis; (what it publishes,
    the Redis its keystrokes are typed into)."""
    relays: list[SessionRelay] = []
    with servers.private_redis() as url:
        lab_stack.point_settings_at_redis(settings, url)
        settings.LABS_TIMELINE_ENABLED = False

        def relay_to(vm: VM) -> tuple[Sent, redis.Redis]:
            sent = Sent()
            relay = SessionRelay(settings.LIBVIRT_URI, vm.session_id, vm.session_id, sent)
            relays.append(relay)
            relay.start()
            return sent, redis.Redis.from_url(url)

        try:
            yield relay_to
        finally:
            for relay in relays:
                relay.stop()


@pytest.fixture
def relayed(
    booted_vm: Callable[[str], VM], relay_to: Callable[[VM], tuple[Sent, redis.Redis]]
) -> tuple[VM, Sent, redis.Redis]:
    vm = booted_vm("tiny")
    return vm, *relay_to(vm)


def typed_and_echoed(vm: VM, sent: Sent, typed: redis.Redis, word: str, timeout: float = 30) -> None:
    started = time.monotonic()
    half = len(word) // 2
    typed.rpush(input_key(vm.session_id), f"\x15echo {word[:half]}''{word[half:]}\r".encode())
    sent.wait_for(f"{word}\r\n".encode(), started, timeout)  # the output, not the typed line


def test_a_flood_of_output_goes_out_a_few_times_a_second_and_a_key_at_once(
    relayed: tuple[VM, Sent, redis.Redis],
) -> None:
    vm, sent, typed = relayed
    typed_and_echoed(vm, sent, typed, "relay-ready")

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


def test_a_paste_into_a_paused_vm_holds_up_no_other_learners_console(
    booted_vm: Callable[[str], VM], relay_to: Callable[[VM], tuple[Sent, redis.Redis]], hv: Hypervisor
) -> None:
    """A guest that takes no keystrokes (paused by a checkpoint or a full disk, or capped) while
    its learner pastes: libvirtd stops reading the connection that carries them. On a connection
    shared by the host's consoles, the other learners' echo stopped, and 30 s later libvirtd
    closed the connection under all of them."""
    paused_vm, other_vm = booted_vm("tiny"), booted_vm("tiny")
    (paused_sent, typed), (other_sent, _) = relay_to(paused_vm), relay_to(other_vm)
    typed_and_echoed(paused_vm, paused_sent, typed, "paused-ready")
    typed_and_echoed(other_vm, other_sent, typed, "other-ready")

    domain = hv.conn.lookupByName(paused_vm.name)
    domain.suspend()
    try:
        typed.rpush(input_key(paused_vm.session_id), *[b"x" * 4096] * 64)  # a 256 KiB paste
        time.sleep(2)  # the relay writes it at once; the stall came within a second, and lasted
        for n in range(5):
            typed_and_echoed(other_vm, other_sent, typed, f"other-{n}-answers", timeout=10)
            time.sleep(1)
    finally:
        domain.resume()
    # Its own console comes back once the guest runs: the paste drains through the serial line.
    typed_and_echoed(paused_vm, paused_sent, typed, "paused-answers-again", timeout=60)


def test_keystrokes_go_into_the_guest_no_faster_than_one_socket_may_send_them(
    booted_vm: Callable[[str], VM], relay_to: Callable[[VM], tuple[Sent, redis.Redis]], settings: Settings
) -> None:
    """However many sockets (each reconnection with a full bucket) a flood comes by: a serial line's
    every byte costs its QEMU CPU. Unpaced, the relay took this paste as fast as the line drained."""
    settings.LABS_WS_INPUT_RATE_BPS, settings.LABS_WS_INPUT_BURST_BYTES = 4096, 8192
    vm = booted_vm("tiny")
    sent, typed = relay_to(vm)
    typed_and_echoed(vm, sent, typed, "paced-ready")  # within the first burst

    time.sleep(2.5)  # the bucket full again
    started = time.monotonic()
    typed.rpush(input_key(vm.session_id), *[b"x" * 1024] * 64)
    time.sleep(3)
    taken = 64 - typed.llen(input_key(vm.session_id))
    elapsed = time.monotonic() - started
    print(f"\n{taken} KiB taken in {elapsed:.1f} s")
    assert 8 <= taken <= 8 + 4 * elapsed + 1, "a burst at once, then the rate"
    # (the guest echoes a long line only in part)
    assert b"x" * 256 in b"".join(sent.since(started)).replace(b"\r\r\n", b""), "what was taken reached the guest"
    typed.delete(input_key(vm.session_id))
