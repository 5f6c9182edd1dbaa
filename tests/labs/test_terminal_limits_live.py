"""Terminal limits against a real uvicorn run with the project's flags: its --ws-max-size, the
Origin of another port, a flood of input frames, web memory while 20 clients that never read are
sent a `yes`-like flood, and the page's notices in Chromium. (The same limits in-process, one by
one: test_terminal_limits.py.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from channels.layers import get_channel_layer
from django.test import override_settings
from playwright.sync_api import Browser, expect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from labs.redis_names import input_key, terminal_group
from portal.settings import channel_layers
from tests import lab_stack

KiB = 1024


# --- Against a real uvicorn -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[lab_stack.LabStack, str]]:
    """uvicorn with the project's flags and no host agent; alice's session, ready (no VM needed)."""
    tmp = tmp_path_factory.mktemp("live")
    with lab_stack.lab_stack(tmp, agent=False, LABS_WS_PER_USER="64") as stack:
        sid = stack.shell(
            "from django.contrib.auth.models import User; from labs.models import LabSession\n"
            "s = LabSession.objects.create(user=User.objects.get(username='alice'), lab_slug='relay-check',"
            " state='ready', host='nohost', vm_id='novm')\nprint(s.id)"
        ).split()[-1]
        yield stack, sid


@pytest.mark.slow
def test_uvicorn_refuses_another_port_and_frames_over_its_max_size(live: tuple[lab_stack.LabStack, str]) -> None:
    stack, sid = live
    alice = stack.client("alice")
    port = stack.base.rsplit(":", 1)[1]
    with pytest.raises(InvalidStatus) as refused:
        alice.websocket(f"/ws/sessions/{sid}/terminal/", origin=f"http://127.0.0.1:{int(port) + 1}")
    assert refused.value.response.status_code == 403
    with alice.websocket(f"/ws/sessions/{sid}/terminal/") as term:
        assert json.loads(term.recv(timeout=10))["type"] == "hello"
        term.send(b"x" * (64 * KiB + 1))
        with pytest.raises(ConnectionClosed) as closed:
            term.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009  # message too big


def drain(term: Any) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            term.recv()


@pytest.mark.slow
@pytest.mark.alone
def test_a_flood_of_input_frames_leaves_web_memory_and_redis_flat(live: tuple[lab_stack.LabStack, str]) -> None:
    # The attack: 64 KiB frames as fast as they go. Compressible ones too: with
    # permessage-deflate, uvicorn inflated every frame of a read (a few hundred bytes each on the
    # wire) into its queue at once: +100 MiB in 2 s from one socket. And the server stops reading
    # a socket past its rate (TCP backpressure) rather than read and drop ~5,000 frames a second
    # on the CPU every other socket of the process shares (bench/isolation.py).
    stack, sid = live
    alice = stack.client("alice")
    pid = server_pid(stack.base)
    client = redis.Redis.from_url(stack.redis_url)
    redis_before, rss_before, peak, frames = int(client.info("memory")["used_memory"]), rss_mib(pid), 0.0, 0
    frame = (b"echo paste; " * 6000)[: 64 * KiB]
    with alice.websocket(f"/ws/sessions/{sid}/terminal/") as term:
        threading.Thread(target=drain, args=(term,), daemon=True).start()  # reads the notices
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            term.send(frame)
            frames += 1
            if frames % 20 == 0:
                peak = max(peak, rss_mib(pid))
        peak = max(peak, rss_mib(pid))  # with the socket's queue full
    time.sleep(0.5)
    redis_growth = (int(client.info("memory")["used_memory"]) - redis_before) / 2**20
    print(f"{frames} frames of 64 KiB in 5 s: web RSS {rss_before:.1f} -> peak {peak:.1f} MiB, "
          f"Redis +{redis_growth:.2f} MiB, {client.llen(input_key(sid))} frames queued")  # fmt: skip
    # What the socket buffers and uvicorn's queue (32 frames) hold, and about a frame a second.
    assert frames < 400, "the server went on reading the flood"
    assert client.llen(input_key(sid)) <= 2, "the burst (one 64 KiB paste) and what 5 s at 4 KiB/s allow"
    assert redis_growth < 1
    assert peak - rss_before < 32
    client.delete(input_key(sid))


def raw_websocket(base: str, path: str, cookie: str) -> socket.socket:
    """A client that completes the handshake and then never reads (a small receive buffer fills fast)."""
    host, port = base.removeprefix("http://").split(":")
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    conn.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {base}\r\nCookie: {cookie}\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += conn.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return conn


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def server_pid(base: str) -> int:
    port = base.rsplit(":", 1)[1].encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"uvicorn") for a in argv[:2]) and b"--port" in argv and port in argv:
            return int(cmdline.parent.name)
    raise AssertionError(f"no uvicorn on port {port.decode()}")


def flood(redis_url: str, group: str, seconds: float, bytes_per_s: int) -> int:
    """Console output as the relay publishes it (4 KiB chunks with offsets), paced; bytes sent."""

    async def publish() -> int:
        layer = get_channel_layer()
        assert layer is not None
        chunk, offset, start = b"y\n" * 2 * KiB, 0, time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            if offset > elapsed * bytes_per_s:
                await asyncio.sleep(0.005)
                continue
            await layer.group_send(group, {"type": "term.output", "data": chunk, "offset": offset})
            offset += len(chunk)
        await layer.flush()
        return offset

    with override_settings(CHANNEL_LAYERS=channel_layers(redis_url)):
        return asyncio.run(publish())


@pytest.mark.slow
@pytest.mark.alone
def test_twenty_clients_that_never_read_leave_web_memory_flat(live: tuple[lab_stack.LabStack, str]) -> None:
    stack, sid = live
    alice = stack.client("alice")
    cookie = "; ".join(f"{c.name}={c.value}" for c in alice.jar)
    pid = server_pid(stack.base)
    stalled = [raw_websocket(stack.base, f"/ws/sessions/{sid}/terminal/", cookie) for _ in range(20)]
    received, resyncs = [0], [0]

    def read_along() -> None:  # one tab that does read (the output really flows), back after a resync as the page is
        while True:
            with alice.websocket(f"/ws/sessions/{sid}/terminal/") as term:
                try:
                    while True:
                        frame = term.recv(timeout=3)
                        received[0] += len(frame) if isinstance(frame, bytes) else 0
                except TimeoutError:
                    return
                except ConnectionClosed as closed:
                    if closed.rcvd is None or closed.rcvd.code != 4408:
                        return
                    resyncs[0] += 1

    reader = threading.Thread(target=read_along)
    reader.start()
    time.sleep(1)
    before = rss_mib(pid)
    peak = [before]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.2):
            peak[0] = max(peak[0], rss_mib(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        sent = flood(stack.redis_url, terminal_group(sid), seconds=15, bytes_per_s=4 * 2**20)
    finally:
        sampling.set()
        sampler.join()
        reader.join()
        for conn in stalled:
            conn.close()
    growth = peak[0] - before
    print(f"web RSS {before:.1f} MiB -> peak {peak[0]:.1f} MiB (+{growth:.1f}) while {sent / 2**20:.0f} MiB of "
          f"output went to 20 clients that never read and one that read {received[0] / 2**20:.0f} MiB "
          f"({resyncs[0]} resyncs)")  # fmt: skip
    assert received[0] > sent / 4, "the reading client was sent the output"
    # Bounded: 20 x (256 KiB pending + the transport's buffer), ~9 MiB measured; held instead, the
    # output piled up in channels_redis's queues at the rate it came (+60 MiB here, growing).
    assert growth < 24, f"web RSS grew {growth:.1f} MiB"


# --- The page shows them (last in this module: Playwright's loop stays in this thread until its end) ---


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_shows_the_limits_and_stops_at_logout(live: tuple[lab_stack.LabStack, str], browser: Browser) -> None:
    stack, _sid = live
    page = browser.new_page()
    page.goto(stack.base + "/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", lab_stack.STACK_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{stack.base}/labs/{stack.slug}/")
    status = page.locator("[data-terminal-status]")
    expect(status).to_have_text("connected", timeout=20_000)

    page.locator(".xterm").click()
    # One paste over the frame size: the page refuses it itself (uvicorn would close the socket
    # mid-frame, 1009, which Chromium on a busy machine saw as a reset, 1006: "reconnecting").
    page.keyboard.insert_text("x" * (64 * KiB + 100))
    expect(status).to_have_text("Too much at once: paste it in smaller parts.")
    expect(status).to_have_text("connected", timeout=20_000)  # the notice gone after 6 s

    page.keyboard.insert_text("y" * 60 * KiB)  # the burst
    page.keyboard.insert_text("z" * 20 * KiB)  # over the rate
    expect(status).to_have_text("Typing too fast: some input was dropped.")

    page.evaluate(
        """() => fetch("/accounts/logout/", {method: "POST", credentials: "same-origin",
            headers: {"X-CSRFToken": document.cookie.match(/csrftoken=([^;]+)/)[1]}})"""
    )
    expect(status).to_have_text("Signed out: sign in again to use this lab.", timeout=10_000)
    expect(page.locator("[data-error]")).to_have_text("Signed out: sign in again to use this lab.")
    page.close()
