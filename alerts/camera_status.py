"""Publishing camera stream-state changes to Redis: a stream of changes plus the latest state per camera.

`publish` never blocks the caller (a camera's reader thread): changes go through a queue to one thread. While
Redis is unreachable the newest change per camera and stream is kept and written once Redis is back.
"""

from __future__ import annotations

import logging
import queue
import threading

import redis

from ingest.state import StateChange

log = logging.getLogger(__name__)

STATUS_STREAM = "gridwatch:camera-status"
STATUS_KEY = "gridwatch:camera:{camera}:status"


class CameraStatusPublisher(threading.Thread):
    def __init__(
        self, client: redis.Redis, stream: str = STATUS_STREAM, maxlen: int = 100_000, retry_s: float = 2.0
    ) -> None:
        super().__init__(name="camera-status", daemon=True)
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self.retry_s = retry_s
        self._queue: queue.Queue[StateChange | None] = queue.Queue()
        self._pending: dict[tuple[str, str], StateChange] = {}
        self.published = 0

    def publish(self, change: StateChange) -> None:
        self._queue.put(change)

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self.join(timeout)

    def run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.retry_s if self._pending else None)
            except queue.Empty:
                self._flush()
                continue
            if item is None:
                self._flush()
                return
            try:
                self._write(item)
            except redis.RedisError as exc:
                log.warning("camera status of %s not published (%s); will retry", item.camera_id, exc)
                self._pending[(item.camera_id, item.stream)] = item

    def _flush(self) -> None:
        for key, change in list(self._pending.items()):
            try:
                self._write(change)  # into the stream too: readers of the history see the change
            except redis.RedisError:
                return
            del self._pending[key]

    def _write(self, change: StateChange, history: bool = True) -> None:
        fields = {
            "camera_id": change.camera_id,
            "stream": change.stream,
            "state": str(change.new),
            "previous": str(change.old),
            "at": f"{change.at:.3f}",
            "reason": change.reason or "",
        }
        pipe = self.client.pipeline()
        if history:
            pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.hset(
            STATUS_KEY.format(camera=change.camera_id),
            mapping={
                f"{change.stream}_state": fields["state"],
                f"{change.stream}_since": fields["at"],
                f"{change.stream}_reason": fields["reason"],
            },
        )
        pipe.execute()
        self.published += 1
