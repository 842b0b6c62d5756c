"""Camera states for an API process that pulls no camera itself (`gridwatch api` of a split deployment): what
the workers publish to Redis (`alerts.camera_status`: one hash per camera, written only by the worker that
holds the camera), read for every camera in one pipelined round trip and kept for `fresh_s`, so the camera
wall of 10,000 cameras costs Redis one call every couple of seconds however many operators look at it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from alerts.camera_status import STATUS_KEY

log = logging.getLogger(__name__)

STREAMS = ("detect", "record")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def health_of(fields: dict[Any, Any]) -> dict[str, Any] | None:
    """The API's `health` of one camera from its status hash: per stream its state, since when (epoch s) and
    the last reason (`last_error`, as the local health calls it); None for a camera never reported."""
    data = {_text(k): _text(v) for k, v in fields.items()}
    out: dict[str, Any] = {}
    for stream in STREAMS:
        state = data.get(f"{stream}_state")
        if state is None:
            continue
        since = data.get(f"{stream}_since")
        out[stream] = {
            "state": state,
            "since": float(since) if since else None,
            "last_error": data.get(f"{stream}_reason") or None,
        }
    return out if "detect" in out else None


class RedisCameraStates:
    def __init__(
        self, client: redis.Redis, camera_ids: Callable[[], Iterable[str]], fresh_s: float = 2.0
    ) -> None:
        self.client, self.camera_ids, self.fresh_s = client, camera_ids, fresh_s
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._health: dict[str, dict[str, Any] | None] = {}

    def health(self, camera_id: str) -> dict[str, Any] | None:
        with self._lock:
            if time.monotonic() - self._read_at >= self.fresh_s:
                self._refresh()
            return self._health.get(camera_id)

    def _refresh(self) -> None:
        ids = list(self.camera_ids())
        try:
            pipe = self.client.pipeline(transaction=False)
            for camera_id in ids:
                pipe.hgetall(STATUS_KEY.format(camera=camera_id))
            rows = pipe.execute()
        except redis.RedisError as exc:
            log.warning("camera states not read from Redis (%s); showing none", exc)
            self._health = {}
        else:
            self._health = {c: health_of(r) for c, r in zip(ids, rows, strict=True)}
        self._read_at = time.monotonic()
