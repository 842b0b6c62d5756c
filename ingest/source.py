"""One thread per camera: RTSP demux with PyAV, packet ring, sampled decode, clip requests, reconnect."""

from __future__ import annotations

import logging
import queue
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from ingest.clip import ClipResult, ClipWriter
from ingest.frames import Frame, FrameSlot
from ingest.ring import PacketRing, RingPacket
from ingest.urls import PROTOCOL_WHITELIST, redact_text, url_password, validate_camera_url

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    camera_id: str
    url: str
    detect_fps: float = 2.0
    ring_seconds: float = 10.0
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    decode_threads: int = 1


@dataclass(frozen=True, slots=True)
class ClipRequest:
    """Record from the keyframe nearest `time_s - pre_roll_s` until `time_s + post_roll_s` (stream time)."""

    time_s: float
    connection: int
    pre_roll_s: float
    post_roll_s: float
    on_done: Callable[[ClipResult], object]


@dataclass(slots=True)
class SourceStats:
    state: str = "connecting"
    connections: int = 0
    packets: int = 0
    frames_decoded: int = 0
    frames_sampled: int = 0
    last_packet_at: float | None = None
    last_error: str | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None


@dataclass(slots=True)
class _ActiveClip:
    request: ClipRequest
    writer: ClipWriter
    end_s: float


@dataclass(slots=True)
class _Connection:
    number: int
    container: Any
    stream: Any
    first_pts: int | None = None
    clips: list[_ActiveClip] = field(default_factory=list)


class CameraSource(threading.Thread):
    """Pulls one camera until stopped; end of stream and errors are disconnects followed by a reconnect."""

    def __init__(self, config: SourceConfig, slot: FrameSlot, clip_dir: Path | None = None) -> None:
        super().__init__(name=f"source-{config.camera_id}", daemon=True)
        self.config = config
        self.url = validate_camera_url(config.url)
        self._secret = url_password(self.url) or ""
        self.slot = slot
        self.ring = PacketRing(config.ring_seconds)
        self.stats = SourceStats()
        self._clip_dir = clip_dir or Path(tempfile.gettempdir())
        self._clip_requests: queue.Queue[ClipRequest] = queue.Queue()
        self._stop_event = threading.Event()
        self._connection_number = 0
        self._seq = 0

    # -- public API (any thread) ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop_event.set()

    def request_clip(self, request: ClipRequest) -> None:
        self._clip_requests.put(request)

    # -- the thread -------------------------------------------------------------------------------------

    def run(self) -> None:
        backoff = self.config.backoff_initial_s
        while not self._stop_event.is_set():
            self.stats.state = "connecting"
            started = time.monotonic()
            try:
                self._run_connection()
                reason = "end of stream"
            except Exception as exc:  # every failure of one camera stays inside its thread
                reason = redact_text(f"{type(exc).__name__}: {exc}", self._secret)
            if self._stop_event.is_set():
                break
            self.stats.state = "offline"
            self.stats.last_error = reason
            if time.monotonic() - started > 60:
                backoff = self.config.backoff_initial_s
            delay = min(backoff, self.config.backoff_max_s) * random.uniform(0.8, 1.2)
            log.warning(
                "camera %s disconnected (%s); reconnecting in %.1f s", self.config.camera_id, reason, delay
            )
            self._stop_event.wait(delay)
            backoff = min(backoff * 2, self.config.backoff_max_s)
        self.stats.state = "stopped"

    def _run_connection(self) -> None:
        options = {"rtsp_transport": "tcp", "protocol_whitelist": PROTOCOL_WHITELIST}
        container = av.open(
            self.url,
            options=options,
            timeout=(self.config.open_timeout_s, self.config.read_timeout_s),
        )
        try:
            if not container.streams.video:
                raise RuntimeError("stream has no video track")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self.config.decode_threads
            self._connection_number += 1
            conn = _Connection(self._connection_number, container, stream)
            self.stats.connections += 1
            self.stats.codec = stream.codec_context.name
            log.info("camera %s connected (%s)", self.config.camera_id, stream.codec_context.name)
            try:
                self._pump(conn)
            finally:
                self._finish_clips(conn, force=True)
        finally:
            container.close()

    def _pump(self, conn: _Connection) -> None:
        interval = 1.0 / self.config.detect_fps if self.config.detect_fps > 0 else float("inf")
        next_sample = 0.0
        time_base = conn.stream.time_base
        for packet in conn.container.demux(conn.stream):
            if self._stop_event.is_set():
                return
            if packet.pts is None or packet.size == 0:
                continue
            now = time.time()
            if conn.first_pts is None:
                conn.first_pts = packet.pts
                self.stats.state = "online"
            time_s = float((packet.pts - conn.first_pts) * time_base)
            ring_packet = RingPacket(
                data=bytes(packet),
                pts=packet.pts,
                dts=packet.dts,
                is_keyframe=packet.is_keyframe,
                time_s=time_s,
                connection=conn.number,
            )
            self.ring.append(ring_packet)
            self.stats.packets += 1
            self.stats.last_packet_at = now
            self._serve_clips(conn, ring_packet)
            for frame in packet.decode():
                self.stats.frames_decoded += 1
                frame_time = (
                    float(frame.time) - float(conn.first_pts * time_base)
                    if frame.time is not None
                    else time_s
                )
                if frame_time + 1e-6 < next_sample:
                    continue
                next_sample = max(next_sample + interval, frame_time)
                image = frame.to_ndarray(format="bgr24")
                self.stats.width, self.stats.height = frame.width, frame.height
                self._seq += 1
                self.stats.frames_sampled += 1
                self.slot.put(Frame(self.config.camera_id, image, frame_time, now, conn.number, self._seq))

    # -- clips --------------------------------------------------------------------------------------------

    def _serve_clips(self, conn: _Connection, newest: RingPacket) -> None:
        while True:
            try:
                request = self._clip_requests.get_nowait()
            except queue.Empty:
                break
            self._start_clip(conn, request)
        for clip in conn.clips:
            if newest.time_s <= clip.end_s:
                clip.writer.write(newest)
        self._finish_clips(conn, force=False, now_s=newest.time_s)

    def _start_clip(self, conn: _Connection, request: ClipRequest) -> None:
        if request.connection != conn.number:
            request.on_done(ClipResult(None, 0, 0, 0, None, None, error="camera reconnected before the clip"))
            return
        path = (
            self._clip_dir / f"{self.config.camera_id}-{conn.number}-{request.time_s:.3f}-{id(request)}.mp4"
        )
        writer = ClipWriter(path, conn.stream)
        for packet in self.ring.since_keyframe_near(request.time_s - request.pre_roll_s, conn.number)[:-1]:
            writer.write(packet)
        conn.clips.append(_ActiveClip(request, writer, request.time_s + request.post_roll_s))

    def _finish_clips(self, conn: _Connection, force: bool, now_s: float = 0.0) -> None:
        keep: list[_ActiveClip] = []
        for clip in conn.clips:
            if force or now_s > clip.end_s:
                result = clip.writer.close()
                try:
                    clip.request.on_done(result)
                except Exception:
                    log.exception("clip callback failed for camera %s", self.config.camera_id)
            else:
                keep.append(clip)
        conn.clips = keep
        if force:
            while not self._clip_requests.empty():
                request = self._clip_requests.get_nowait()
                request.on_done(ClipResult(None, 0, 0, 0, None, None, error="camera disconnected"))
