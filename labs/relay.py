"""Console relay: serial console bytes ⇄ Redis, one pair of threads per ready session on this host.

Output goes to the session's terminal group on the channel layer (published from one asyncio loop
so channels_redis keeps pooled connections) and to a bounded scrollback in Redis; keystrokes
arrive on a Redis list that a writer thread pops. The relay runs inside the host agent (see
labs/agent.py); which relays exist follows the sessions' state in the DB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from labs import hosts
from labs.models import LabSession
from labs.services.events import terminal_group
from labs.states import SessionState

if TYPE_CHECKING:  # the web tier imports the key helpers below and must not load libvirt
    from labs.hypervisor import Hypervisor

log = logging.getLogger(__name__)
SCROLLBACK_BYTES = 64 * 1024
KEY_TTL_S = 24 * 3600
ACTIVITY_EVERY_S = 30.0


def buffer_key(session_id: str) -> str:
    return f"virtlab:term:{session_id}:buf"


def offset_key(session_id: str) -> str:
    """Total bytes ever relayed: lets a reconnecting client splice scrollback and live bytes."""
    return f"virtlab:term:{session_id}:off"


def input_key(session_id: str) -> str:
    return f"virtlab:term:{session_id}:in"


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
    """Reader and writer threads for one session's console; reattaches when the stream ends."""

    def __init__(self, hv: Hypervisor, session_id: str, vm_id: str, publisher: Publisher):
        self.hv, self.session_id, self.vm_id, self.publisher = hv, session_id, vm_id, publisher
        self.stopping = threading.Event()
        self.console: Any = None
        self.redis = hosts.redis_client()
        # BLPOP blocks: the writer gets a connection whose read timeout outlasts it.
        self.input_redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10)
        self._last_activity = 0.0
        self.threads = [
            threading.Thread(target=self._read_loop, name=f"relay-read-{session_id}", daemon=True),
            threading.Thread(target=self._write_loop, name=f"relay-write-{session_id}", daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.console is not None:
            self.console.close()

    def _read_loop(self) -> None:
        from labs.hypervisor import ConsoleClosed, HypervisorError

        while not self.stopping.is_set():
            try:
                self.console = self.hv.vm(self.vm_id).console()
            except HypervisorError:
                self.stopping.wait(0.5)  # VM not there (yet, or any more): the manager decides
                continue
            try:
                while not self.stopping.is_set():
                    data = self.console.read(timeout=0.25)
                    if data:
                        self._publish(data)
            except ConsoleClosed:
                pass  # reverted or stopped: reattach
            finally:
                self.console.close()

    def _publish(self, data: bytes) -> None:
        offset = append_output(self.redis, self.session_id, data)
        self.publisher.send(terminal_group(self.session_id), {"type": "term.output", "data": data, "offset": offset})

    def _write_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                item = self.input_redis.blpop([input_key(self.session_id)], timeout=1)
            except redis.RedisError:
                self.stopping.wait(1)
                continue
            if item is None:
                continue
            data = item[1]
            self._write(data if isinstance(data, bytes) else data.encode())

    def _write(self, data: bytes) -> None:
        from labs.hypervisor import ConsoleClosed, HypervisorError

        # Keystrokes typed while the console (re)attaches wait for it, briefly.
        deadline = time.monotonic() + 5
        while not self.stopping.is_set() and time.monotonic() < deadline:
            console = self.console
            if console is not None and not console.closed:
                try:
                    console.write(data)
                    self._note_activity()
                    return
                except (ConsoleClosed, HypervisorError, TimeoutError):
                    pass
            time.sleep(0.05)
        log.info("relay %s: dropped %d input bytes (no console)", self.session_id, len(data))

    def _note_activity(self) -> None:
        now = time.monotonic()
        if now - self._last_activity > ACTIVITY_EVERY_S:
            self._last_activity = now
            close_old_connections()
            LabSession.objects.filter(pk=self.session_id).update(last_activity=timezone.now())


class RelayManager:
    """Keeps one SessionRelay per session of this host that has a VM to talk to."""

    POLL_S = 0.5

    def __init__(self, host: str, libvirt_uri: str):
        self.host, self.libvirt_uri = host, libvirt_uri
        self.stopping = threading.Event()
        self.relays: dict[str, SessionRelay] = {}

    def run(self) -> None:
        from labs.hypervisor import Hypervisor

        publisher = Publisher()
        while not self.stopping.is_set():
            try:
                with Hypervisor.connect(self.libvirt_uri) as hv:
                    while not self.stopping.is_set():
                        self._sync(hv, publisher)
                        self.stopping.wait(self.POLL_S)
            except Exception:  # libvirtd restarting, DB blip: keep the relay alive
                log.exception("console relay: restarting")
            self._stop_all()
            self.stopping.wait(2)
        self._stop_all()

    def _sync(self, hv: Hypervisor, publisher: Publisher) -> None:
        close_old_connections()
        wanted = dict(
            LabSession.objects.filter(
                host=self.host, state__in=[SessionState.READY, SessionState.RESETTING]
            ).values_list("id", "vm_id")
        )
        for session_id in set(self.relays) - set(wanted):
            self.relays.pop(session_id).stop()
        for session_id, vm_id in wanted.items():
            if session_id not in self.relays and vm_id:
                relay = SessionRelay(hv, session_id, vm_id, publisher)
                self.relays[session_id] = relay
                relay.start()

    def _stop_all(self) -> None:
        for relay in self.relays.values():
            with contextlib.suppress(Exception):
                relay.stop()
        self.relays.clear()
