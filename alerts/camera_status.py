"""Publishing camera stream-state changes to Redis: a stream of changes plus the latest state per camera.

`publish` never blocks the caller (a camera's reader thread): changes go through a queue to one thread. While
Redis is unreachable the newest change per camera and stream is kept and written once Redis is back.

A worker of many passes a `guard`: for each camera, the Redis key and value that must be there for the write
(its lease of the camera). The check and the write are one Lua script, so a worker that lost the camera
(paused past its lease) cannot overwrite the new owner's state; a change refused so is dropped and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import redis

from ingest.state import StateChange

log = logging.getLogger(__name__)

STATUS_STREAM = "gridwatch:camera-status"
STATUS_KEY = "gridwatch:camera:{camera}:status"

# For a camera: (key, value) Redis must hold for a write of its state, or None: this process may not write it.
Guard = Callable[[str], tuple[str, str] | None]

# KEYS: guard key, stream, status hash. ARGV: the guard's value, maxlen ("" for no history entry), the number
# of stream fields n, n field/value pairs, then the hash's field/value pairs. 0: refused, 1: written.
_GUARDED_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[3])
if ARGV[2] ~= '' then
  local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*'}
  for i = 4, 3 + 2 * n do args[#args + 1] = ARGV[i] end
  redis.call(unpack(args))
end
local hash = {'HSET', KEYS[3]}
for i = 4 + 2 * n, #ARGV do hash[#hash + 1] = ARGV[i] end
redis.call(unpack(hash))
return 1
"""


class CameraStatusPublisher(threading.Thread):
    def __init__(
        self,
        client: redis.Redis,
        stream: str = STATUS_STREAM,
        maxlen: int = 100_000,
        retry_s: float = 2.0,
        guard: Guard | None = None,
    ) -> None:
        super().__init__(name="camera-status", daemon=True)
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self.retry_s = retry_s
        self.guard = guard
        self._guarded = client.register_script(_GUARDED_WRITE)
        self._queue: queue.Queue[StateChange | None] = queue.Queue()
        self._pending: dict[tuple[str, str], StateChange] = {}
        self.published = 0
        self.refused = 0  # changes of cameras this process no longer held when they were to be written

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
        state = {
            f"{change.stream}_state": fields["state"],
            f"{change.stream}_since": fields["at"],
            f"{change.stream}_reason": fields["reason"],
        }
        status_key = STATUS_KEY.format(camera=change.camera_id)
        if self.guard is not None:
            self._write_guarded(change, fields, state, status_key, history)
            return
        pipe = self.client.pipeline()
        if history:
            pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.hset(status_key, mapping=state)  # type: ignore[arg-type]
        pipe.execute()
        self.published += 1

    def _write_guarded(
        self,
        change: StateChange,
        fields: dict[str, str],
        state: dict[str, str],
        status_key: str,
        history: bool,
    ) -> None:
        assert self.guard is not None
        guard = self.guard(change.camera_id)
        written = 0
        if guard is not None:
            key, value = guard
            args: list[str | int] = [value, self.maxlen if history else "", len(fields)]
            for pairs in (fields, state):
                for name, text in pairs.items():
                    args += [name, text]
            written = int(self._guarded(keys=[key, self.stream, status_key], args=args))
        if written:
            self.published += 1
            return
        self.refused += 1
        log.info("camera %s: state %s not published: this worker no longer holds the camera",
                 change.camera_id, change.new)  # fmt: skip
