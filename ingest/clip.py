"""Clips: ring pre-roll plus post-roll packets remuxed into MP4 without re-encoding.

A clip request is a recording that lasts as long as its event: the requester holds a `ClipHandle` and
extends it each time the event's object is seen; the stream loop closes the file `post_roll_s` after the
last sighting, and cuts long recordings into continuation files (sequence 0, 1, 2...) at keyframes.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ingest.ring import RingPacket


@dataclass(frozen=True, slots=True)
class ClipResult:
    """A finished clip file, or why there is none."""

    path: Path | None
    duration_s: float
    packets: int
    size_bytes: int
    sha256: str | None
    codec: str | None
    error: str | None = None
    sequence: int = 0  # 0: the first file of a recording; 1, 2...: its continuations
    started_at: float | None = None  # wall clock (epoch seconds) of the file's first frame, when known
    stream_start_s: float | None = None  # stream time of its first frame on `connection` (exact, for tiling)
    connection: int | None = None  # the source connection the file was recorded from


@dataclass(frozen=True, slots=True)
class Sighting:
    """Where a frame of the event lies: on the detect stream (`time_s` of `connection`) and on the clock."""

    time_s: float
    connection: int
    wall_time: float  # 0.0: unknown (then only a clip of the same detect connection can place it)


class ClipHandle:
    """The requester's side of one recording; every method is thread-safe.

    `extend()` each time the event's object is seen: the recording then runs until that sighting plus the
    post-roll. `release()` when the event ends: no more extensions, the recording finishes at its last
    sighting plus the post-roll. `finished` is set by the stream loop once no clip file can follow.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: Sighting | None = None
        self._released = False
        self._finished = threading.Event()

    def extend(self, time_s: float, connection: int, wall_time: float) -> None:
        with self._lock:
            if self._released:
                return
            last = self._last
            if last is None or (connection, time_s) >= (last.connection, last.time_s):
                self._last = Sighting(time_s, connection, wall_time)

    def release(self) -> None:
        with self._lock:
            self._released = True

    @property
    def released(self) -> bool:
        with self._lock:
            return self._released

    @property
    def last(self) -> Sighting | None:
        with self._lock:
            return self._last

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the stream loop has closed the recording's last file (True), at most `timeout` s."""
        return self._finished.wait(timeout)

    def mark_finished(self) -> None:
        """Called by the stream loop: the recording is over."""
        self._finished.set()


class ClipWriter:
    """Writes packets of one video stream into an MP4 whose first packet is a keyframe.

    Timestamps are rebased so the clip starts at zero. Packets without pts are dropped (RTSP sometimes
    delivers them). The output stream copies the codec parameters of the live input stream.
    """

    def __init__(self, path: Path, template: Any) -> None:
        self.path = path
        self._container: Any = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
        self._stream = self._container.add_stream_from_template(template)
        self._time_base: Fraction = template.time_base
        self._codec = template.codec_context.name if template.codec_context else None
        self._first_pts: int | None = None
        self._last_pts = 0
        self._last_dts: int | None = None
        self._frame_duration = 0
        self.packets = 0
        self.start_time_s: float | None = None  # stream time of the first packet written (a keyframe)

    def write(self, packet: RingPacket) -> None:
        if self._first_pts is None:
            if not packet.is_keyframe:
                return
            self._first_pts = packet.pts
            self.start_time_s = packet.time_s
        pts = packet.pts - self._first_pts
        dts = (packet.dts - self._first_pts) if packet.dts is not None else pts
        if self._last_dts is not None and dts <= self._last_dts:
            dts = self._last_dts + 1
            pts = max(pts, dts)
        if pts < 0:
            return
        out = av.Packet(packet.data)
        out.pts = pts
        out.dts = dts
        out.time_base = self._time_base
        out.is_keyframe = packet.is_keyframe
        out.stream = self._stream
        self._container.mux(out)
        if self.packets:
            self._frame_duration = (
                max(1, pts - self._last_pts) if pts > self._last_pts else self._frame_duration
            )
        self._last_pts = max(self._last_pts, pts)
        self._last_dts = dts
        self.packets += 1

    @property
    def duration_s(self) -> float:
        if self._first_pts is None:
            return 0.0
        return float((self._last_pts + self._frame_duration) * self._time_base)

    def close(self) -> ClipResult:
        duration = self.duration_s
        try:
            self._container.close()
        except Exception as exc:  # an empty or broken clip: report, keep nothing half-written
            self.path.unlink(missing_ok=True)
            return ClipResult(None, 0.0, 0, 0, None, self._codec, error=f"mp4 close failed: {exc}")
        if self.packets == 0:
            self.path.unlink(missing_ok=True)
            return ClipResult(None, 0.0, 0, 0, None, self._codec, error="no keyframe arrived for the clip")
        digest = hashlib.sha256()
        size = 0
        with open(self.path, "rb") as written:  # streamed: a long clip is never held in memory
            while chunk := written.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
        return ClipResult(
            path=self.path,
            duration_s=duration,
            packets=self.packets,
            size_bytes=size,
            sha256=digest.hexdigest(),
            codec=self._codec,
        )
