"""The channel layer's bound on each channel's queue (portal/channel_layer.py), on a real Redis: a
consumer that stops reading loses what waited past the bound and is told so once, while another
member of the same group, reading, gets every message."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.test import override_settings

from portal.channel_layer import OVERFLOW_TYPE, BoundedQueue
from portal.settings import channel_layers
from tests import servers

KiB = 1024


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with servers.private_redis() as url:
        yield url


def layer_for(url: str, queue_max_bytes: int) -> Any:
    with override_settings(CHANNEL_LAYERS=channel_layers(url, queue_max_bytes)):
        return get_channel_layer()


async def until(predicate: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_a_channel_that_is_not_read_keeps_at_most_its_bound_and_is_told_once(redis_url: str) -> None:
    layer = layer_for(redis_url, 64 * KiB)

    async def scenario() -> None:
        laggard, reader = await layer.new_channel(), await layer.new_channel()
        for channel in (laggard, reader):
            await layer.group_add("g", channel)
        got: list[int] = []

        async def read() -> None:
            while len(got) < 200:
                got.append((await layer.receive(reader))["n"])

        async def send(n: int) -> None:
            await layer.group_send("g", {"type": "term.output", "n": n, "data": b"y" * KiB})

        reading = asyncio.ensure_future(read())
        await send(0)
        await until(lambda: got == [0])  # the layer's reader task polls Redis from now on
        queue: BoundedQueue = layer._get_layer().channels[laggard]
        peak = 0
        for n in range(1, 200):  # 200 KiB, 1 KiB at a time; one member keeps up, the other reads nothing
            await send(n)
            await asyncio.sleep(0.002)
            peak = max(peak, queue.size)
        await asyncio.wait_for(reading, 5)
        assert got == list(range(200)), "the member that reads gets every message, in order"
        assert 0 < peak <= 64 * KiB, f"{peak} bytes waited for the laggard"

        # What waited was dropped: the laggard first hears that, once, then what comes after.
        assert await layer.receive(laggard) == {"type": OVERFLOW_TYPE}
        await send(200)
        assert (await asyncio.wait_for(layer.receive(laggard), 5))["n"] == 200
        await layer.flush()

    asyncio.run(scenario())


def test_the_bound_counts_bytes_and_the_overflow_message_takes_their_place() -> None:
    queue = BoundedQueue(10, b"OVERFLOW")
    for item in (b"abc", b"defg", b"hij"):  # 10 bytes: at the bound, all kept
        queue.put_nowait(item)
    assert (queue.qsize(), queue.size) == (3, 10)
    assert queue.get_nowait() == b"abc"
    queue.put_nowait(b"klm")  # 10 again
    queue.put_nowait(b"n")  # 11: everything waiting goes
    assert (queue.qsize(), queue.size) == (1, 0)
    queue.put_nowait(b"dropped too")  # until the consumer has heard
    assert queue.get_nowait() == b"OVERFLOW"
    queue.put_nowait(b"o")
    assert queue.get_nowait() == b"o"
    assert queue.size == 0
