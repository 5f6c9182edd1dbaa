"""Console relay: serial console bytes ⇄ Redis, one pair of threads per ready session on this host.

Output goes to the session's terminal group on the channel layer (published from one asyncio loop
so channels_redis keeps pooled connections) and to a bounded scrollback in Redis; keystrokes
arrive on a Redis list that a writer thread pops. The relay runs inside the host agent (see
labs/host/host_agent.py); which relays exist follows the sessions' state in the DB
(labs/host/relay_manager.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from labs import host_registry
from labs.host import recorder
from labs.hypervisor import Console, ConsoleClosed, Hypervisor, HypervisorError
from labs.hypervisor.polling import poll
from labs.models import LabSession
from labs.redis_names import buffer_key, hold_key, input_key, offset_key, size_key, terminal_group, wake_key
from labs.socket_frames import TokenBucket

log = logging.getLogger(__name__)
SCROLLBACK_BYTES = 64 * 1024
KEY_TTL_S = 24 * 3600
ACTIVITY_EVERY_S = 30.0
PUBLISH_EVERY_S = 0.02  # a console's output is published at most this often (SessionRelay._gather)
CONSOLE_TTY = "/dev/ttyS0"  # the guest's serial console (console=ttyS0), where the learner's shell runs


@contextlib.contextmanager
def _unless_redis_away(what: str) -> Iterator[None]:
    """A VM task must not fail over a terminal nicety while Redis restarts (keystrokes cannot
    arrive then either); the host's reconciler releases a hold whose release was lost."""
    try:
        yield
    except redis.RedisError as exc:
        log.warning("%s skipped: Redis unavailable (%s)", what, exc)


def hold_input(session_id: str, seconds: int = 300) -> bool:
    """Keep keystrokes queued in Redis (not typed into the VM) until release_input(): while a
    checkpoint of the step's starting state is still to be taken. Expires in case a worker dies.
    Returns whether this call made the hold (False: one was there already, or Redis is away)."""
    made = False
    with _unless_redis_away(f"holding the input of {session_id}"):
        made = bool(host_registry.redis_client().set(hold_key(session_id), 1, ex=seconds, nx=True))
    return made  # noqa: RET504 - reached with False when the context manager swallows a Redis error


def release_input(session_id: str) -> None:
    with _unless_redis_away(f"releasing the input of {session_id}"):
        host_registry.redis_client().delete(hold_key(session_id))


# Sent on a session's size list instead of "cols rows": set the tty size the relay last had again.
SIZE_AGAIN = b"again"


def size_again(session_id: str) -> None:
    """After a revert: the snapshot brought back its own tty size. The relay sets it again on
    reattaching, but that may run before the revert is complete (a loaded host widens the gap), so
    the revert, once done, asks for it once more."""
    with (
        _unless_redis_away(f"asking for the tty size of {session_id} again"),
        host_registry.redis_client().pipeline(transaction=True) as pipe,
    ):
        pipe.rpush(size_key(session_id), SIZE_AGAIN)
        pipe.expire(size_key(session_id), 24 * 3600)
        pipe.execute()


def wake(host: str) -> None:
    """Make `host`'s relay manager look at the sessions now rather than at its next poll."""
    with _unless_redis_away(f"waking the console relay of {host}"):
        client = host_registry.redis_client()
        client.rpush(wake_key(host), 1)
        client.expire(wake_key(host), 60)


def append_output(client: redis.Redis, session_id: str, data: bytes) -> int:
    """Add console output to the scrollback; returns the offset of its first byte."""
    pipe = client.pipeline(transaction=True)
    pipe.append(buffer_key(session_id), data)
    pipe.incrby(offset_key(session_id), len(data))
    pipe.expire(buffer_key(session_id), KEY_TTL_S)
    pipe.expire(offset_key(session_id), KEY_TTL_S)
    length, end, *_ = pipe.execute()
    if length > 2 * SCROLLBACK_BYTES:  # trim rarely: one writer per session, so no race
        client.set(buffer_key(session_id), client.getrange(buffer_key(session_id), -SCROLLBACK_BYTES, -1))
    return int(end) - len(data)


class Publisher:
    """One event loop thread through which every relay sends to the channel layer."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="relay-publisher", daemon=True)
        self._thread.start()
        self.layer = get_channel_layer()

    def send(self, group: str, message: dict[str, Any]) -> None:
        if self.layer is None:
            return
        future = asyncio.run_coroutine_threadsafe(self.layer.group_send(group, message), self.loop)
        try:
            future.result(timeout=5)
        except Exception:  # a slow or absent Redis must not kill the relay
            log.warning("terminal publish to %s failed", group, exc_info=True)


class SessionRelay:
    """Reader and writer threads for one session's console, on a libvirt connection of its own.

    libvirtd stops reading a client connection while max_client_requests (5) of its messages wait,
    and closes it when its keepalives go unanswered (30 s here). Keystrokes for a guest that takes
    them slower than they come are such messages: a VM paused (a checkpoint, a full disk), slowed
    (a CPU cap) or just pasted into faster than its serial line drains. When every console of the
    host shared one connection, one learner's paste into their paused VM stalled every other
    learner's echo, then closed all their consoles ("Client hit max requests limit 5" in libvirtd's
    log; tests/labs/test_console_relay.py). On a connection of its own the wait is theirs alone.

    The relay reattaches when the console stream ends (a revert) and ends with its connection;
    the manager then starts another.
    """

    JOIN_S = 45.0  # the size thread's longest call (wait_ready 30 s, then stty 10 s), and some

    def __init__(
        self,
        libvirt_uri: str,
        session_id: str,
        vm_id: str,
        publisher: Publisher,
        handed: tuple[Hypervisor, Console] | None = None,
    ):
        self.libvirt_uri, self.session_id, self.vm_id, self.publisher = libvirt_uri, session_id, vm_id, publisher
        self.stopping = threading.Event()
        # A warm VM's console, already attached on its own connection: used first, no reattach wait.
        self.hv: Hypervisor | None = handed[0] if handed else None
        self._handed_console = handed[1] if handed else None
        self.console: Any = None
        self.redis = host_registry.redis_client()
        # BLPOP blocks: the writer gets a connection whose read timeout outlasts it.
        self.input_redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10)
        self._last_activity = 0.0
        self.size: tuple[int, int] | None = None  # the page's latest (cols, rows)
        self.size_wanted = threading.Event()
        self.input_bucket = TokenBucket(settings.LABS_WS_INPUT_RATE_BPS, settings.LABS_WS_INPUT_BURST_BYTES)
        self.recorder = _open_recorder(session_id)
        self.threads = [  # the reader last: it closes the connection once the others have ended
            threading.Thread(target=self._write_loop, name=f"relay-write-{session_id}", daemon=True),
            threading.Thread(target=self._size_loop, name=f"relay-size-{session_id}", daemon=True),
            threading.Thread(target=self._read_loop, name=f"relay-read-{session_id}", daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    @property
    def ended(self) -> bool:
        return self.stopping.is_set()

    def stop(self) -> None:
        self.stopping.set()
        if self.console is not None:
            self.console.close()
        if self.recorder is not None:
            self.recorder.close()

    def _read_loop(self) -> None:
        try:
            if self.hv is None:
                self.hv = Hypervisor.open(self.libvirt_uri)
            self._relay(self.hv)
        except HypervisorError as exc:  # libvirtd away: the manager tries again with a new relay
            log.warning("relay %s: no libvirt connection: %s", self.session_id, exc)
            self.stopping.wait(2)
        finally:
            self.stop()
            for thread in self.threads[:-1]:
                thread.join(self.JOIN_S)
            if self.hv is not None:
                self.hv.close()

    def _relay(self, hv: Hypervisor) -> None:
        while not self.stopping.is_set():
            try:
                if self._handed_console is not None:
                    self.console, self._handed_console = self._handed_console, None
                    self.console.write(b"\n")  # the prompt was printed before anyone listened
                else:
                    self.console = hv.vm(self.vm_id).console()
            except HypervisorError:
                if not hv.alive():
                    break
                self.stopping.wait(0.2)  # VM not there (yet, or any more): the manager decides
                continue
            log.debug("relay %s: console attached", self.session_id)
            if self.size is not None:
                self.size_wanted.set()  # a revert brought back the tty size of the snapshot
            try:
                last = 0.0
                while not self.stopping.is_set():
                    data = self.console.read(timeout=0.25)
                    if data:
                        self._publish(self._gather(data, last))
                        last = time.monotonic()
                    elif not hv.alive():  # libvirtd restarted: the stream may never say so
                        break
            except ConsoleClosed:
                pass  # reverted or stopped: reattach
            finally:
                self.console.close()
            if not hv.alive():
                break
        if not self.stopping.is_set():
            log.warning("relay %s: libvirt connection lost; the relay starts again", self.session_id)

    def _gather(self, data: bytes, last: float) -> bytes:
        """`data`, and what else the console sends before PUBLISH_EVERY_S has passed since the
        last publish: a key's echo goes out at once, a flood in chunks of what a period brings.
        (`yes` arrives in ~13-byte reads, 5,000 a second, each a Redis append and a message through
        the publisher every relay of the host shares, and to every web process with a tab open.)"""
        wait = PUBLISH_EVERY_S - (time.monotonic() - last)
        if wait <= 0:
            return data
        self.stopping.wait(wait)
        try:
            return data + self.console.read(timeout=0)
        except ConsoleClosed:  # ended meanwhile: what came before still goes out
            return data

    def _publish(self, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder.output(data)
        offset = append_output(self.redis, self.session_id, data)
        self.publisher.send(terminal_group(self.session_id), {"type": "term.output", "data": data, "offset": offset})

    def _write_loop(self) -> None:
        keys = [input_key(self.session_id), size_key(self.session_id)]
        while not self.stopping.is_set():
            try:
                # Set before the session turns provisioning (which starts this relay): no pop races it.
                if self.input_redis.exists(hold_key(self.session_id)):
                    self.stopping.wait(0.05)
                    continue
                item = self.input_redis.blpop(keys, timeout=1)
            except redis.RedisError:
                self.stopping.wait(1)
                continue
            if item is None:
                continue
            key, data = (part if isinstance(part, bytes) else part.encode() for part in item)
            if key.decode() == keys[0]:
                self._paced_write(data)
            elif data == SIZE_AGAIN:
                if self.size is not None:
                    self.size_wanted.set()
            else:
                cols, rows = (int(n) for n in data.split())
                self.size = (cols, rows)
                if self.recorder is not None:
                    self.recorder.resize(cols, rows)
                self.size_wanted.set()

    def _size_loop(self) -> None:
        """Give the console tty the page's window size, so full-screen programs and line editing fit.

        A serial line carries no size, so it is set from inside the guest over the control channel
        (never typed on the console); the kernel then signals SIGWINCH to the shell. Its own thread:
        the agent may be busy or reconnecting after a revert, and keystrokes must not wait for it.
        """
        while not self.stopping.is_set():
            hv = self.hv
            if hv is None:  # the reader is connecting
                self.stopping.wait(0.1)
                continue
            if not self.size_wanted.wait(1) or self.size is None:
                continue
            self.size_wanted.clear()
            cols, rows = self.size
            try:
                vm = hv.vm(self.vm_id)
                vm.wait_ready(30)
                vm.exec(["stty", "-F", CONSOLE_TTY, "cols", str(cols), "rows", str(rows)], timeout_s=10)
            except HypervisorError as exc:  # the VM is going away; a later resize or reattach retries
                log.info("relay %s: resize to %sx%s failed: %s", self.session_id, cols, rows, exc)

    def _paced_write(self, data: bytes) -> None:
        """Keystrokes go into the guest at most at the rate one socket may send them, however many
        sockets (or reconnections, each with a full bucket) they came by; the rest wait in Redis,
        where the queue's bound drops what is past it with a notice. Every byte into a serial line
        costs its QEMU CPU under TCG: a flood of input kept the abuser's QEMU at 0.44 of a core
        (bench/isolation.py --abuse flood, 2026-12-07)."""
        burst = self.input_bucket.burst
        for start in range(0, len(data), int(burst)):
            chunk = data[start : start + int(burst)]
            while not self.input_bucket.take(len(chunk)):
                if self.stopping.wait(self.input_bucket.wait_s(len(chunk))):
                    return
            self._write(chunk)

    def _write(self, data: bytes) -> None:
        # Keystrokes typed while the console (re)attaches wait for it, briefly.
        def write() -> bool:
            console = self.console
            if console is None or console.closed:
                return False
            console.write(data)
            return True

        retry_on = (ConsoleClosed, HypervisorError, TimeoutError)
        if poll(write, timeout_s=5, interval_s=0.05, stop=self.stopping, retry_on=retry_on):
            if self.recorder is not None:
                self.recorder.input(data)
            self._note_activity()
            return
        log.info("relay %s: dropped %d input bytes (no console)", self.session_id, len(data))

    def _note_activity(self) -> None:
        now = time.monotonic()
        if now - self._last_activity > ACTIVITY_EVERY_S:
            self._last_activity = now
            close_old_connections()
            LabSession.objects.filter(pk=self.session_id).update(last_activity=timezone.now())


def _open_recorder(session_id: str) -> recorder.Recorder | None:
    """The session's timeline record (appended to if an earlier agent began it); a disk problem
    costs the record, never the terminal."""
    if not settings.LABS_TIMELINE_ENABLED:
        return None
    try:
        return recorder.Recorder(session_id)
    except OSError:
        log.exception("relay %s: cannot open its timeline record; not recording", session_id)
        return None
