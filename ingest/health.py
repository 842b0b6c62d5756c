"""Per-stream health figures: rates over a sliding window, last-packet age, reconnects, last error."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


class RateMeter:
    """Events (and their sizes) per second over the last `window_s` seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def add(self, size: int = 1, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._events.append((now, size))
            self._expire(now)

    def _expire(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._events and self._events[0][0] < cutoff:
            self._events.popleft()

    def rate(self, now: float | None = None) -> tuple[float, float]:
        """(events per second, size units per second)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            count = len(self._events)
            total = sum(size for _, size in self._events)
        return count / self.window_s, total / self.window_s


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """A snapshot of one stream of a camera, safe to show (the error is redacted)."""

    state: str
    state_since: float
    input_fps: float
    decoded_fps: float
    bitrate_kbps: float
    last_packet_age_s: float | None
    reconnects: int
    last_error: str | None
    decode_mode: str | None
    codec: str | None
    width: int | None
    height: int | None
    packets: int
    frames_decoded: int
    frames_sampled: int
    decode_errors: int = 0
    bitstream_wakes: int = 0  # idle P-frames large enough to switch to full decode (ingest.wake)
    keyframes_skipped: int = 0  # idle keyframes not decoded (`idle_keyframe_interval_s`)
