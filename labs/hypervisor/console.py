"""The serial console of a VM as a libvirt stream: write keystrokes, read output with a timeout.

Built for a relay thread that forwards bytes between the console and Redis: `read()` blocks up to
a timeout and returns whatever arrived, so the relay can also notice shutdown requests.
Output printed before the console was attached is lost (the pty has no backlog), so opening a
console sends a newline to make the guest shell print a fresh prompt.
"""

from __future__ import annotations

import contextlib
import queue
import threading

import libvirt

from .errors import ConsoleClosed, translated
from .polling import Deadline, poll

_EVENTS = libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP
_CHUNK = 65536
_SEND_TIMEOUT_S = 5.0


class Console:
    """An attached serial console. Use as a context manager or call close()."""

    def __init__(self, conn: libvirt.virConnect, domain: libvirt.virDomain, wake: bool = True):
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._closed = threading.Event()
        self._eof = False
        self._pending = b""  # read by read_until() past its marker: the next read returns it first
        with translated():
            self._stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            # FORCE takes the console over from a stale client (e.g. a relay that crashed).
            domain.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            self._stream.eventAddCallback(_EVENTS, self._on_event, None)
        if wake:
            self.write(b"\n")

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        # Runs on the libvirt event thread: drain everything readable into the queue.
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(_CHUNK)
                except libvirt.libvirtError:
                    data = b""
                if data == -2:
                    break
                if not data:
                    self._finish_events(stream)
                    return
                self._queue.put(data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._finish_events(stream)

    def _finish_events(self, stream: libvirt.virStream) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(libvirt.libvirtError):
            stream.eventRemoveCallback()
        self._queue.put(None)

    @property
    def closed(self) -> bool:
        """Whether the stream has ended (domain stopped or reverted, or close() called)."""
        return self._closed.is_set() and self._queue.empty() and not self._pending

    def read(self, timeout: float) -> bytes:
        """Return the bytes available within `timeout` seconds (b"" if none arrived).

        Raises ConsoleClosed once the stream has ended and everything was read.
        """
        if self._pending:
            pending, self._pending = self._pending, b""
            return pending
        if self._eof:
            raise ConsoleClosed("console stream has ended")
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return b""
        chunks: list[bytes] = []
        item: bytes | None = first
        while True:
            if item is None:
                self._eof = True
                if not chunks:
                    raise ConsoleClosed("console stream has ended")
                break
            chunks.append(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return b"".join(chunks)

    def read_until(self, marker: bytes, timeout: float) -> bytes:
        """Read up to and including the first `marker`; TimeoutError if it never appears.

        What arrived after the marker is kept for the next read: output that comes in one chunk
        with the marker (a prompt right after a command's output) is not lost to the caller.
        """
        deadline = Deadline(timeout)
        buffer = b""
        while marker not in buffer:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise TimeoutError(f"{marker!r} not seen on the console within {timeout}s: {buffer[-300:]!r}")
            buffer += self.read(min(remaining, 0.5))
        end = buffer.index(marker) + len(marker)
        self._pending = buffer[end:]
        return buffer[:end]

    def write(self, data: bytes) -> None:
        """Send keystrokes to the guest; TimeoutError if the stream stays full for 5 s."""
        view = memoryview(data)

        def send_what_fits() -> bool:
            nonlocal view
            while view:
                if self._closed.is_set():
                    raise ConsoleClosed("console stream has ended")
                with translated():
                    sent = self._stream.send(bytes(view))
                if sent == -2:  # the stream is full: try again shortly
                    return False
                view = view[sent:]
            return True

        if not poll(send_what_fits, timeout_s=_SEND_TIMEOUT_S, interval_s=0.005):
            raise TimeoutError("console did not accept input")

    def close(self) -> None:
        """Detach from the console (the guest keeps running)."""
        if not self._closed.is_set():
            self._closed.set()
            with contextlib.suppress(libvirt.libvirtError):
                self._stream.eventRemoveCallback()
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
