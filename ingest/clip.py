"""Clips: ring pre-roll plus post-roll packets remuxed into MP4 without re-encoding."""

from __future__ import annotations

import hashlib
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

    def write(self, packet: RingPacket) -> None:
        if self._first_pts is None:
            if not packet.is_keyframe:
                return
            self._first_pts = packet.pts
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
        data = self.path.read_bytes()
        return ClipResult(
            path=self.path,
            duration_s=duration,
            packets=self.packets,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            codec=self._codec,
        )
