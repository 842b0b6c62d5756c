"""The live feed: alert-stream entries as Server-Sent Events for the operators' and patrols' browsers.

One thread per API process follows the Redis stream (XREAD, no consumer group: every API process sees every
entry) and hands each entry to the subscribers' queues on their event loops. A browser that reconnects sends
`Last-Event-ID` and gets what it missed from the stream (XRANGE), then the live entries. A subscriber too slow
to keep up (its queue full) is dropped and reconnects. A comment line every `heartbeat_s` keeps proxies from
closing an idle connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from alerts.bus import BusMessage

log = logging.getLogger(__name__)

Visible = Callable[[BusMessage], bool]


@dataclass(eq=False)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[str, BusMessage]]
    visible: Visible
    dropped: bool = field(default=False)


def event_of(entry_id: str, m: BusMessage) -> str:
    """One SSE event: `event:` the entry's kind, `id:` the stream id, `data:` JSON with the API's links."""
    data: dict[str, Any] = dict(m.fields())
    data["score"] = m.score
    if m.bbox is not None:
        data["bbox"] = list(m.bbox)
    base = f"/api/v1/alerts/{m.alert_id}"
    data["url"] = base
    if m.snapshot_key:
        data["snapshot_url"] = f"{base}/snapshot"
    for key in ("snapshot_key", "clip_key"):  # object keys are the store's business, not the browser's
        data.pop(key, None)
    return f"id: {entry_id}\nevent: {m.kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class FeedHub(threading.Thread):
    def __init__(
        self, client: redis.Redis, stream: str, *, queue_size: int = 1000, retry_max_s: float = 5.0
    ) -> None:
        super().__init__(name="live-feed", daemon=True)
        self.client = client
        self.stream = stream
        self.queue_size = queue_size
        self.retry_max_s = retry_max_s
        self.stopping = threading.Event()
        self._subscribers: set[_Subscriber] = set()
        self._lock = threading.Lock()
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        self._block_ms = max(100, int(timeout * 1000) - 500) if timeout else 1000
        self._block_ms = min(self._block_ms, 1000)

    # -- the reader thread -----------------------------------------------------------------------

    def run(self) -> None:
        last = "$"
        wait = 0.1
        while not self.stopping.is_set():
            try:
                if last == "$":  # where the stream ends now, so a restart of Redis does not replay it all
                    info = cast(list[Any], self.client.xrevrange(self.stream, count=1))
                    last = _text(info[0][0]) if info else "0-0"
                response = cast(
                    list[Any], self.client.xread({self.stream: last}, count=200, block=self._block_ms)
                )
                wait = 0.1
            except redis.RedisError as exc:
                if wait == 0.1:
                    log.warning("live feed: Redis unreachable (%s); retrying", exc)
                self.stopping.wait(wait)
                wait = min(self.retry_max_s, wait * 2)
                continue
            for _stream, entries in response or []:
                for entry_id, fields in entries:
                    last = _text(entry_id)
                    self._fan_out(last, fields)

    def _fan_out(self, entry_id: str, fields: dict[Any, Any]) -> None:
        try:
            message = BusMessage.from_fields(fields)
        except (KeyError, ValueError):
            return  # the dispatcher dead-letters it; nothing for browsers
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            if sub.visible(message):
                sub.loop.call_soon_threadsafe(self._put, sub, (entry_id, message))

    def _put(self, sub: _Subscriber, item: tuple[str, BusMessage]) -> None:
        if sub.dropped:
            return
        try:
            sub.queue.put_nowait(item)
        except asyncio.QueueFull:  # too slow: drop it, the browser reconnects with Last-Event-ID
            sub.dropped = True
            with self._lock:
                self._subscribers.discard(sub)

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(5)

    # -- subscribers (on the API's event loop) ---------------------------------------------------------

    async def events(
        self, visible: Visible, last_event_id: str | None = None, heartbeat_s: float = 15.0
    ) -> AsyncIterator[str]:
        """The SSE text for one browser: what it missed since `last_event_id`, then live entries."""
        sub = _Subscriber(asyncio.get_running_loop(), asyncio.Queue(self.queue_size), visible)
        with self._lock:
            self._subscribers.add(sub)
        try:
            yield "retry: 3000\n\n"
            seen = last_event_id
            if last_event_id:
                for entry_id, message in await asyncio.to_thread(self._since, last_event_id):
                    if visible(message):
                        seen = entry_id
                        yield event_of(entry_id, message)
            while True:
                if sub.dropped and sub.queue.empty():
                    return
                try:
                    item = await asyncio.wait_for(sub.queue.get(), heartbeat_s)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                entry_id, message = item
                if seen is not None and _older_or_same(entry_id, seen):
                    continue  # already sent from the backlog
                yield event_of(entry_id, message)
        finally:
            with self._lock:
                self._subscribers.discard(sub)

    def _since(self, last_event_id: str, limit: int = 500) -> list[tuple[str, BusMessage]]:
        try:
            entries = cast(list[Any], self.client.xrange(self.stream, min=f"({last_event_id}", count=limit))
        except redis.RedisError:
            return []
        out = []
        for entry_id, fields in entries:
            try:
                out.append((_text(entry_id), BusMessage.from_fields(fields)))
            except (KeyError, ValueError):
                continue
        return out

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)


def valid_event_id(text: str | None) -> str | None:
    """A stream id from a `Last-Event-ID` header, or None when it is not one."""
    if not text or len(text) > 40:
        return None
    ms, _, seq = text.partition("-")
    return text if ms.isdigit() and (seq.isdigit() or seq == "") else None


def _older_or_same(a: str, b: str) -> bool:
    def key(x: str) -> tuple[int, int]:
        ms, _, seq = x.partition("-")
        return int(ms), int(seq or 0)

    return key(a) <= key(b)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
