"""libvirt's default event loop, run on one daemon thread per process.

Console streams deliver bytes through event callbacks, and connection keepalives need the loop
too. libvirt requires the implementation to be registered before a connection is opened, so
Hypervisor.connect() calls ensure_event_loop() first. After a fork the child gets its own thread.
"""

from __future__ import annotations

import os
import threading

import libvirt

_lock = threading.Lock()
_registered = False
_thread_pid: int | None = None


def _run_forever() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and start its thread (once per process)."""
    global _registered, _thread_pid
    with _lock:
        if not _registered:
            libvirt.virEventRegisterDefaultImpl()
            _registered = True
        if _thread_pid != os.getpid():
            threading.Thread(target=_run_forever, name="libvirt-events", daemon=True).start()
            _thread_pid = os.getpid()
