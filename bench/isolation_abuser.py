"""The abusive learner of bench/isolation.py, in a process of its own (so that its flood cannot slow
the measuring loop): it floods everything the limits cover, in its guest, on its sockets and over
HTTP, and reports what it got (counts by outcome)."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests import lab_stack

# What the abuser runs in their own guest: disk fill, CPU burn, a fork bomb, and `yes` on the console.
GUEST_ABUSE = (
    b"dd if=/dev/zero of=/root/fill bs=1M 2>/dev/null & while :; do :; done & f(){ f|f & }; (sleep 5; f) & yes\n"
)


ABUSES = ("guest", "flood", "sockets", "checks", "http")


def abuse(base: str, username: str, sid: str, slug: str, seconds: float, kinds: set[str], go: Any, report: Any) -> None:
    """Flood everything (of `kinds`) for `seconds` once `go` is set; put a dict of counts on `report`."""
    # On a real deployment the abuser's client runs on their own machine, not on the host's cores
    # it floods: here it shares them, so it yields to the host's processes (they stay at 0).
    os.nice(10)
    client = lab_stack.LabClient(base)
    client.login(username, lab_stack.STACK_PASSWORD)
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def count(what: str, n: int = 1) -> None:
        with lock:
            counts[what] = counts.get(what, 0) + n

    go.wait()
    until = time.monotonic() + seconds
    if "guest" in kinds and not asyncio.run(start_guest_abuse(client, sid)):
        count("guest abuse not seen running")

    def checks() -> None:
        while time.monotonic() < until:
            status, _ = client.request("POST", f"/api/sessions/{sid}/check", {"step": 1})
            count(f"check {status}")

    def http_bursts() -> None:
        paths = [f"/api/sessions/{sid}", f"/labs/{slug}/", "/"]
        with ThreadPoolExecutor(12) as pool:
            while time.monotonic() < until:
                burst = [pool.submit(client.request, "GET", random.choice(paths)) for _ in range(60)]
                burst += [pool.submit(client.request, "POST", "/api/sessions", {"lab": slug}) for _ in range(5)]
                for future in burst:
                    try:
                        count(f"http {future.result()[0]}")
                    except Exception:
                        count("http error")
                time.sleep(2)

    jobs = [checks, checks] if "checks" in kinds else []
    jobs += [http_bursts] if "http" in kinds else []
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    asyncio.run(_abuse_sockets(client, sid, until, kinds, count))
    # What was counted by the deadline: a burst still waiting on held refusals (a few seconds) is
    # not waited for (daemon threads, gone with the process).
    for thread in threads:
        thread.join(timeout=max(0.0, until + 1 - time.monotonic()))
    with lock:
        report.put(dict(counts))


async def start_guest_abuse(client: lab_stack.LabClient, sid: str) -> bool:
    """Type GUEST_ABUSE on a clean line of the abuser's terminal, before any other abuse (the input
    floods would garble the line, and the check floods use up the share a socket needs); whether
    `yes` was seen running within 30 s."""
    base = client.base.replace("http://", "ws://")
    headers = {"Cookie": "; ".join(f"{c.name}={c.value}" for c in client.jar), "Origin": client.base}
    async with connect(f"{base}/ws/sessions/{sid}/terminal/", additional_headers=headers, open_timeout=30,
                       max_size=None, close_timeout=1) as ws:  # fmt: skip
        await ws.send(b"\x03\x15" + GUEST_ABUSE)
        seen, deadline = bytearray(), time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                frame = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            seen += frame if isinstance(frame, bytes) else b""
            if b"y\r\ny\r\ny" in seen[-8192:]:
                return True
    return False


async def _abuse_sockets(client: lab_stack.LabClient, sid: str, until: float, kinds: set[str], count: Any) -> None:
    base = client.base.replace("http://", "ws://")
    cookies = "; ".join(f"{c.name}={c.value}" for c in client.jar)
    headers = {"Cookie": cookies, "Origin": client.base}

    async def open_ws(kind: str) -> ClientConnection | None:
        try:
            # close_timeout: a socket the server has stopped reading (past its rate) must not
            # hold the abuser's wind-down for the default 10 s each.
            ws = await connect(f"{base}/ws/sessions/{sid}/{kind}/", additional_headers=headers, open_timeout=30,
                               max_size=None, close_timeout=1)  # fmt: skip
        except Exception:
            count(f"{kind} refused")
            return None
        count(f"{kind} opened")
        return ws

    async def guest() -> None:
        """Read the flood of their own guest (reopening the socket when the share closes it)."""
        while time.monotonic() < until:
            ws = await open_ws("terminal")
            if ws is None:
                await asyncio.sleep(0.5)
                continue
            received = 0
            try:  # a socket over the abuser's share is accepted and closed at once (4429)
                while time.monotonic() < until:
                    frame = await asyncio.wait_for(ws.recv(), max(0.1, until - time.monotonic()))
                    received += len(frame)
            except (ConnectionClosed, TimeoutError):
                pass
            count("terminal output bytes", received)
            await ws.close()

    async def flood() -> None:
        """64 KiB frames as fast as they go, never reading: reopened when closed."""
        frame = b"x" * 64 * 1024
        while time.monotonic() < until:
            ws = await open_ws("terminal")
            if ws is None:
                await asyncio.sleep(0.2)
                continue
            try:
                while time.monotonic() < until:
                    # Bounded: past its rate the server stops reading, and a send waits on TCP.
                    await asyncio.wait_for(ws.send(frame), max(0.1, until - time.monotonic()))
                    count("flood frames")
            except ConnectionClosed:
                count("flood closed")
                await ws.close()
            except TimeoutError:
                # A frame half sent to a server that reads 4 KiB/s: a graceful close would wait for
                # it to drain (~16 s); drop the connection instead.
                ws.transport.abort()

    async def hoard(kind: str) -> None:
        """Hold as many sockets as will open, never reading; try for more twice a second."""
        held: list[ClientConnection] = []
        while time.monotonic() < until:
            ws = await open_ws(kind)
            if ws is not None:
                held.append(ws)
            await asyncio.sleep(0.5 if len(held) > 4 else 0.05)
        await asyncio.gather(*(ws.close() for ws in held))

    jobs = [guest()] if "guest" in kinds else []
    jobs += [flood() for _ in range(4)] if "flood" in kinds else []
    jobs += [hoard("events"), hoard("events"), hoard("terminal")] if "sockets" in kinds else []
    await asyncio.gather(*jobs)
