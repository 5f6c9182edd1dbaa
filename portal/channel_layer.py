"""The channel layer: channels_redis's pub/sub layer with a bound on what each channel holds.

channels_redis gives every consumer's channel an asyncio.Queue with no bound, filled by one task
reading Redis. A consumer that falls behind (its web process short of CPU while a guest floods its
console) let its queue grow as fast as the output came: +60 MiB of web memory in
tests/labs/test_terminal_limits_live.py. Here a channel holds at most `queue_max_bytes`; past it, what
waits is dropped and the consumer gets one `{"type": "channel.overflow"}` message in its place, so
it can tell its client to resync (the pages reconnect and reload their state, as after any gap).

channels_redis has no hook for the queue it makes, hence the subclasses (checked against the pinned
channels_redis 4.3.0: `_subscribe_to_channel` and `_get_layer` are the only places a queue or a
loop layer is made).
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, _wrap_close

OVERFLOW_TYPE = "channel.overflow"


class BoundedQueue(asyncio.Queue[bytes]):
    """Serialized messages, at most `max_bytes` of them; past that, the `overflow` message alone
    (put in place of what waited), and nothing more until the consumer has taken it."""

    def __init__(self, max_bytes: int, overflow: bytes) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.overflow = overflow
        self.size = 0
        self.dropping = False

    def put_nowait(self, item: bytes) -> None:
        if self.dropping:
            return
        if self.size + len(item) > self.max_bytes:
            while not self.empty():
                super().get_nowait()
            self.size, self.dropping = 0, True
            super().put_nowait(self.overflow)
            return
        self.size += len(item)
        super().put_nowait(item)

    def get_nowait(self) -> bytes:  # Queue.get ends here too
        item = super().get_nowait()
        if item is self.overflow:
            self.dropping = False
        else:
            self.size -= len(item)
        return item


class BoundedLoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args: Any, queue_max_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue_max_bytes = queue_max_bytes
        self.overflow: bytes = self.channel_layer.serialize({"type": OVERFLOW_TYPE})

    async def _subscribe_to_channel(self, channel: str) -> None:
        self.channels[channel] = BoundedQueue(self.queue_max_bytes, self.overflow)
        await self._get_shard(channel).subscribe(channel)


class BoundedPubSubChannelLayer(RedisPubSubChannelLayer):
    """CONFIG as RedisPubSubChannelLayer's, plus `queue_max_bytes` (per channel, per process)."""

    def _get_layer(self) -> BoundedLoopLayer:
        loop = asyncio.get_running_loop()
        layer: BoundedLoopLayer | None = self._layers.get(loop)
        if layer is None:
            layer = BoundedLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer
