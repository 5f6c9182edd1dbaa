"""Which console relays run on this host: one SessionRelay per session whose VM is there to talk
to (its state in the DB says so), and the attached consoles of the ready warm-pool VMs."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import redis
from django.conf import settings
from django.db import close_old_connections

from labs.host import recorder
from labs.host.console_relay import Publisher, SessionRelay
from labs.hypervisor import Console, Hypervisor, HypervisorError
from labs.models import LabSession, PoolVM
from labs.redis_names import wake_key
from labs.states import SessionState

log = logging.getLogger(__name__)

# Sessions whose console is relayed: from provisioning, so the page shows the VM coming up.
RELAYED_STATES = (SessionState.PROVISIONING, SessionState.READY, SessionState.RESETTING)


class RelayManager:
    """Keeps one SessionRelay per session of this host that has a VM to talk to.

    It also holds the console of every ready warm-pool VM, each on a connection of its own, and
    hands both to the session that takes the VM: QEMU notices a new reader of a serial pty only on
    a 1 s timer, so attaching at hand-out would delay the learner's first prompt by up to a second.
    """

    POLL_S = 0.5

    def __init__(self, host: str, libvirt_uri: str):
        self.host, self.libvirt_uri = host, libvirt_uri
        self.stopping = threading.Event()
        self.relays: dict[str, SessionRelay] = {}
        self.idle_consoles: dict[str, tuple[Hypervisor, Console]] = {}  # warm-pool VM id -> its console
        self._timelines_looked_at = 0.0
        # BLPOP with a timeout: reads must be allowed to outlast it.
        self.redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=self.POLL_S + 5)

    def run(self) -> None:
        publisher = Publisher()
        while not self.stopping.is_set():
            try:
                self._sync(publisher)
            except Exception:  # a DB blip: keep the relays, look again
                log.exception("console relay: sync failed")
                self.stopping.wait(2)
            self._sleep()
        self._stop_all()

    def _sleep(self) -> None:
        """Until the next poll, or until a task wakes us (a session on this host began provisioning)."""
        try:
            if self.redis.blpop([wake_key(self.host)], timeout=self.POLL_S):
                self.redis.delete(wake_key(self.host))  # one look serves every wake-up so far
        except redis.RedisError:
            self.stopping.wait(self.POLL_S)

    def _sync(self, publisher: Publisher) -> None:
        close_old_connections()
        wanted = dict(LabSession.objects.filter(host=self.host, state__in=RELAYED_STATES).values_list("id", "vm_id"))
        for session_id, relay in list(self.relays.items()):
            if session_id not in wanted or relay.ended:  # ended: its connection was lost
                self.relays.pop(session_id).stop()
        for session_id, vm_id in wanted.items():
            if session_id not in self.relays and vm_id:
                handed = self.idle_consoles.pop(vm_id, None)
                relay = SessionRelay(self.libvirt_uri, session_id, vm_id, publisher, handed)
                self.relays[session_id] = relay
                relay.start()
        self._hold_idle_consoles()
        self._tend_timelines()

    def _tend_timelines(self) -> None:
        """Markers into the running sessions' records, buffers flushed; ended sessions' records stored."""
        # A full disk or a DB blip costs (part of) a record, never the terminals this loop keeps.
        for relay in self.relays.values():
            if relay.recorder is not None:
                try:
                    relay.recorder.tick(self.redis)
                except Exception:
                    log.warning("relay %s: timeline write failed", relay.session_id, exc_info=True)
        if time.monotonic() - self._timelines_looked_at >= recorder.FINISH_EVERY_S:
            self._timelines_looked_at = time.monotonic()
            try:
                recorder.finish_ended(self.host, set(self.relays), self.redis)
            except Exception:
                log.warning("console relay: storing ended timelines failed; trying again later", exc_info=True)

    def _hold_idle_consoles(self) -> None:
        idle = set(PoolVM.objects.filter(host=self.host, state=PoolVM.State.READY).values_list("id", flat=True))
        for vm_id in set(self.idle_consoles) - idle:
            _close_line(self.idle_consoles.pop(vm_id))
        for vm_id in idle:
            line = self.idle_consoles.get(vm_id)
            if line is not None and not line[1].closed and line[0].alive():
                with contextlib.suppress(Exception):
                    line[1].read(timeout=0)  # nobody watches an idle VM: drop what it printed
                continue
            if line is not None:
                _close_line(self.idle_consoles.pop(vm_id))
            try:
                hv = Hypervisor.open(self.libvirt_uri)
            except HypervisorError:
                return  # libvirtd away: look again next time
            try:
                self.idle_consoles[vm_id] = (hv, hv.vm(vm_id).console(wake=False))
            except HypervisorError:
                hv.close()  # booting or gone: look again next time

    def _stop_all(self) -> None:
        for relay in self.relays.values():
            with contextlib.suppress(Exception):
                relay.stop()
        for line in self.idle_consoles.values():
            _close_line(line)
        self.relays.clear()
        self.idle_consoles.clear()


def _close_line(line: tuple[Hypervisor, Console]) -> None:
    hv, console = line
    with contextlib.suppress(Exception):
        console.close()
    hv.close()
