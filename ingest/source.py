"""A camera source: a detect stream decoded at the sample rate, an optional record stream kept undecoded.

Each stream is a `StreamLoop` thread that supervises one connection at a time: the connection runs in its
own reader thread (PyAV demux), while the loop watches the last-packet age independently of FFmpeg's own
timeouts. No packet for `stall_after_s` makes the stream STALLED; for `watchdog_timeout_s` the loop abandons
the connection (a reader stuck inside FFmpeg is left to time out on its own) and reconnects with capped,
jittered exponential backoff. End of stream on a live camera is a disconnect. Authentication failures back
off slowly.

Decode budget: while nothing happens, the detect stream decodes keyframes only (`skip_frame = NONKEY`). A
motion function (handed in by the worker: ingest never imports detect) or `hold_active()` switches to full
decode; the switch replays the ring from the last keyframe through the decoder, so it takes effect at once.
"""

from __future__ import annotations

import dataclasses
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

from ingest.clip import ClipHandle, ClipResult, ClipWriter
from ingest.errors import ErrorKind, classify_open_error, describe_error, url_secrets
from ingest.frames import Frame, FrameSlot, MotionFunction, MotionResult
from ingest.health import RateMeter, StreamHealth
from ingest.ring import PacketRing, RingPacket
from ingest.state import StateChange, StateMachine, StreamState
from ingest.urls import PROTOCOL_WHITELIST, redact_text, validate_camera_url
from ingest.wake import PacketSizeWake

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    camera_id: str
    url: str  # the stream that is decoded for detection (a sub-stream if the camera has one)
    record_url: str | None = None  # main stream kept for clips without decoding; None: clips from `url`
    detect_fps: float = 2.0
    ring_seconds: float = 10.0
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    stall_after_s: float = 3.0
    watchdog_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    stable_after_s: float = 60.0  # connected this long: backoff starts again from the initial delay
    auth_backoff_s: float = 60.0
    decode_threads: int = 1
    keyframes_when_idle: bool = True
    active_hold_s: float = 10.0
    idle_keyframe_interval_s: float = 2.0  # while idle, decode a keyframe at most this often
    wake_ratio: float = 3.0  # idle P-frames this many times their still size wake full decode; 0: off
    wake_hold_s: float = 2.0  # full decode this long after a bitstream wake (motion extends it)


@dataclass(frozen=True, slots=True)
class ClipRequest:
    """Record from the keyframe nearest `time_s - pre_roll_s` until `post_roll_s` after the event's last
    sighting (`handle.extend()`; without one, `time_s` itself).

    `time_s`/`connection` locate the event on the detect stream; `wall_time` locates it on another stream
    (the record stream, or the detect stream after a reconnect). With `max_clip_s` > 0 a recording is cut at
    the last keyframe that keeps a file within it and goes on in a continuation file (sequence 1, 2...) that
    starts with that keyframe. `on_done` gets every file (`ClipResult.sequence`) and every failure.
    """

    time_s: float
    connection: int
    pre_roll_s: float
    post_roll_s: float
    on_done: Callable[[ClipResult], object]
    wall_time: float = 0.0
    max_clip_s: float = 0.0
    handle: ClipHandle = field(default_factory=ClipHandle, compare=False)


# A recording between files (its object unseen for longer than the post-roll, or its camera reconnecting)
# whose event neither comes back nor ends within this long is given up.
IDLE_RECORDING_S = 60.0


@dataclass(slots=True)
class _Recording:
    """One clip request in progress: at most one open file at a time, on one connection."""

    request: ClipRequest
    sequence: int = 0  # of the open file, or of the next one
    writer: ClipWriter | None = None
    connection: int = 0  # of the open file, or of the last one
    resume_s: float | None = None  # where the last file stopped (its first packet left out), on `connection`
    written: RingPacket | None = None  # the newest packet the open file got from the ring when it opened
    idle_since: float = 0.0  # monotonic; when the last file closed with the event still open
    done: bool = False


@dataclass(slots=True)
class _Connection:
    """One connection's state, shared by its reader thread and the supervising loop (under `lock`)."""

    number: int
    cancelled: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    opened: bool = False
    opened_at: float = 0.0  # monotonic; arms the watchdog for a connection that never sends a packet
    container: Any = None
    stream: Any = None
    first_pts: int | None = None
    wall_offset: float | None = None  # min(wall - time_s): maps wall clock to this connection's time
    last_packet: float = 0.0  # monotonic
    last_key_s: float | None = None  # stream time of the newest keyframe (clips: the GOP length)
    gop_s: float = 0.0
    error: BaseException | None = None
    error_kind: ErrorKind | None = None
    error_text: str | None = None
    ended: threading.Event = field(default_factory=threading.Event)


class StreamLoop(threading.Thread):
    """Connect, pump, watch, reconnect: one stream of one camera until stopped."""

    def __init__(
        self,
        config: SourceConfig,
        url: str,
        role: str,
        ring: PacketRing,
        slot: FrameSlot | None,
        clip_dir: Path,
        on_state: Callable[[StateChange], None] | None,
        motion: MotionFunction | None = None,
    ) -> None:
        super().__init__(name=f"{role}-{config.camera_id}", daemon=True)
        self.config = config
        self.url = validate_camera_url(url)
        self.role = role
        self.decode = slot is not None
        self.ring = ring
        self.slot = slot
        self.motion = motion
        self._secrets = url_secrets(self.url)
        self._clip_dir = clip_dir
        self.machine = StateMachine(config.camera_id, role, on_state)
        self._clip_requests: queue.Queue[ClipRequest] = queue.Queue()
        self._recordings: list[_Recording] = []  # under _clip_lock (any connection's reader, the loop)
        self._clip_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._conn: _Connection | None = None
        self._connections = 0
        self._seq = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.packets = 0
        self.frames_decoded = 0
        self.frames_sampled = 0
        self.decode_errors = 0
        self.bitstream_wakes = 0
        self.keyframes_skipped = 0
        self.codec: str | None = None
        self.width: int | None = None
        self.height: int | None = None
        self.decode_mode: str | None = "full" if self.decode else None
        self._packet_rate = RateMeter()
        self._decode_rate = RateMeter()
        self._active_until = 0.0
        self.abandoned_readers = 0

    # -- control (any thread) -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop_event.set()
        conn = self._conn
        if conn is not None:
            conn.cancelled.set()

    def request_clip(self, request: ClipRequest) -> None:
        self._clip_requests.put(request)

    def hold_active(self, seconds: float) -> None:
        """Decode every frame (not only keyframes) for at least `seconds` from now."""
        self._active_until = max(self._active_until, time.monotonic() + seconds)

    def health(self) -> StreamHealth:
        conn = self._conn
        age = time.monotonic() - conn.last_packet if conn is not None and conn.last_packet else None
        input_fps, bytes_per_s = self._packet_rate.rate()
        decoded_fps, _ = self._decode_rate.rate()
        return StreamHealth(
            state=str(self.machine.state),
            state_since=self.machine.since,
            input_fps=round(input_fps, 2),
            decoded_fps=round(decoded_fps, 2),
            bitrate_kbps=round(bytes_per_s * 8 / 1000, 1),
            last_packet_age_s=round(age, 2) if age is not None else None,
            reconnects=self.reconnects,
            last_error=self.last_error,
            decode_mode=self.decode_mode,
            codec=self.codec,
            width=self.width,
            height=self.height,
            packets=self.packets,
            frames_decoded=self.frames_decoded,
            frames_sampled=self.frames_sampled,
            decode_errors=self.decode_errors,
            bitstream_wakes=self.bitstream_wakes,
            keyframes_skipped=self.keyframes_skipped,
        )

    # -- supervision ----------------------------------------------------------------------------------

    def run(self) -> None:
        cfg = self.config
        backoff = cfg.backoff_initial_s
        try:
            while not self._stop_event.is_set():
                started = time.monotonic()
                conn = self._connect_and_watch()
                if self._stop_event.is_set():
                    break
                connected_for = time.monotonic() - started
                kind, reason = conn.error_kind, conn.error_text or "end of stream"
                self.last_error = reason
                if kind == "auth_failed":
                    self.machine.move(StreamState.AUTH_FAILED, reason)
                    delay = max(cfg.auth_backoff_s, backoff)
                elif kind in ("unsupported", "no_video"):
                    self.machine.move(StreamState.UNSUPPORTED, reason)
                    delay = cfg.backoff_max_s
                else:
                    self.machine.move(StreamState.OFFLINE, reason)
                    if conn.opened and connected_for >= cfg.stable_after_s:
                        backoff = cfg.backoff_initial_s
                    delay = min(backoff, cfg.backoff_max_s) * random.uniform(0.8, 1.2)
                    backoff = min(backoff * 2, cfg.backoff_max_s)
                log.warning(
                    "camera %s %s stream: %s; reconnecting in %.1f s", cfg.camera_id, self.role, reason, delay
                )
                self._stop_event.wait(delay)
                self.reconnects += 1
        finally:
            self._end_recordings()  # stopped between connections: nothing else would end them
            self.machine.move(StreamState.STOPPED)

    def _connect_and_watch(self) -> _Connection:
        self._connections += 1
        conn = _Connection(self._connections)
        self._conn = conn
        reader = threading.Thread(
            target=self._read, args=(conn,), name=f"{self.role}-reader-{self.config.camera_id}", daemon=True
        )
        reader.start()
        cfg = self.config
        while not conn.ended.wait(0.2):
            if self._stop_event.is_set():
                conn.cancelled.set()
                break
            last = conn.last_packet or conn.opened_at
            if not last:
                continue  # opening: bounded by the open timeout inside FFmpeg
            age = time.monotonic() - last
            if age >= cfg.watchdog_timeout_s:
                self._abandon(conn, f"no packet for {age:.1f} s (watchdog)")
                break
            if age >= cfg.stall_after_s and self.machine.state == StreamState.ONLINE:
                self.machine.move(StreamState.STALLED, f"no packet for {age:.1f} s")
        reader.join(timeout=0.5 if conn.cancelled.is_set() and not self._stop_event.is_set() else 5)
        if reader.is_alive():
            self.abandoned_readers += 1
            log.warning(
                "camera %s: a reader is still blocked in FFmpeg; left to time out", self.config.camera_id
            )
        with conn.lock:
            self._finish_clips(conn, force=True)
        return conn

    def _abandon(self, conn: _Connection, reason: str) -> None:
        conn.cancelled.set()
        if conn.error_text is None:
            conn.error_kind, conn.error_text = "timeout", reason

    # -- the reader thread ----------------------------------------------------------------------------

    def _read(self, conn: _Connection) -> None:
        cfg = self.config
        started = time.monotonic()
        try:
            try:
                container = av.open(
                    self.url,
                    options={"rtsp_transport": "tcp", "protocol_whitelist": PROTOCOL_WHITELIST},
                    timeout=(cfg.open_timeout_s, cfg.read_timeout_s),
                )
            except Exception as exc:
                kind, message = classify_open_error(
                    exc, self.url, time.monotonic() - started, cfg.open_timeout_s
                )
                conn.error_kind, conn.error_text = kind, redact_text(message, *self._secrets)
                return
            try:
                conn.container = container
                if conn.cancelled.is_set():
                    return  # stopped or abandoned while opening: do not start waiting for packets
                if not container.streams.video:
                    found = ", ".join(s.type for s in container.streams) or "none"
                    conn.error_kind = "no_video"
                    conn.error_text = f"the stream has no video track (found: {found})"
                    return
                stream = container.streams.video[0]
                conn.stream = stream
                conn.opened_at = time.monotonic()
                conn.opened = True
                self.codec = stream.codec_context.name
                if self.decode:
                    stream.codec_context.thread_count = cfg.decode_threads
                self._pump(conn)
            finally:
                with conn.lock:
                    self._finish_clips(conn, force=True)
                container.close()
        except Exception as exc:
            if conn.error_text is None:
                timed_out = isinstance(exc, av.error.ExitError | TimeoutError)
                conn.error_kind = "timeout" if timed_out else "error"
                what = (
                    f"no packet within the read timeout of {cfg.read_timeout_s:g} s"
                    if timed_out
                    else "read error"
                )
                conn.error_text = redact_text(f"{what} ({describe_error(exc)})", *self._secrets)
        finally:
            conn.ended.set()

    def _pump(self, conn: _Connection) -> None:
        cfg = self.config
        interval = 1.0 / cfg.detect_fps if cfg.detect_fps > 0 else float("inf")
        next_sample = 0.0
        time_base = conn.stream.time_base
        codec = conn.stream.codec_context
        mode = "full"
        wake = PacketSizeWake(cfg.wake_ratio) if cfg.wake_ratio > 0 else None
        last_key_s = float("-inf")  # stream time of the last keyframe given to the decoder
        for packet in conn.container.demux(conn.stream):
            if conn.cancelled.is_set():
                return
            if packet.pts is None or packet.size == 0:
                continue
            wall = time.time()
            mono = time.monotonic()
            if conn.first_pts is None:
                conn.first_pts = packet.pts
            time_s = float((packet.pts - conn.first_pts) * time_base)
            offset = wall - time_s
            conn.wall_offset = offset if conn.wall_offset is None else min(conn.wall_offset, offset)
            conn.last_packet = mono
            data = bytes(packet)
            self.packets += 1
            self._packet_rate.add(len(data), mono)
            if self.machine.state != StreamState.ONLINE:
                self.machine.move(StreamState.ONLINE)
            ring_packet = RingPacket(data, packet.pts, packet.dts, packet.is_keyframe, time_s, conn.number)
            self.ring.append(ring_packet)
            with conn.lock:
                if conn.cancelled.is_set():
                    return
                self._serve_clips(conn, ring_packet)
            if not self.decode:
                continue
            wanted = "full" if (not cfg.keyframes_when_idle or mono < self._active_until) else "keyframes"
            if wanted != mode:
                mode = self._switch_decode(conn, codec, wanted, ring_packet)
            if mode == "keyframes":
                if not packet.is_keyframe:
                    if wake is None or not wake.observe(len(data)):
                        continue  # the decoder would skip it anyway
                    self.bitstream_wakes += 1
                    self.hold_active(cfg.wake_hold_s)
                    mode = self._switch_decode(conn, codec, "full", ring_packet)
                elif time_s - last_key_s < cfg.idle_keyframe_interval_s - 0.05:
                    self.keyframes_skipped += 1
                    continue
            if packet.is_keyframe:
                last_key_s = time_s
            try:
                frames = codec.decode(packet)
            except av.error.InvalidDataError as exc:  # a damaged packet: skip it, keep the connection
                self.decode_errors += 1
                log.debug("camera %s: undecodable packet (%s)", cfg.camera_id, describe_error(exc))
                continue
            for frame in frames:
                self.frames_decoded += 1
                self._decode_rate.add(1, mono)
                frame_time = (
                    float(frame.pts - conn.first_pts) * float(time_base) if frame.pts is not None else time_s
                )
                if frame_time + 1e-6 < next_sample:
                    continue
                next_sample = max(next_sample + interval, frame_time)
                image = frame.to_ndarray(format="bgr24")
                self.width, self.height = frame.width, frame.height
                seen = self.motion(image) if self.motion is not None else True
                moving, regions = (
                    (seen.moving, seen.regions) if isinstance(seen, MotionResult) else (seen, ())
                )
                if moving and self.motion is not None:
                    self.hold_active(cfg.active_hold_s)
                self._seq += 1
                self.frames_sampled += 1
                assert self.slot is not None
                self.slot.put(
                    Frame(cfg.camera_id, image, frame_time, wall, conn.number, self._seq, moving, regions)
                )

    def _switch_decode(self, conn: _Connection, codec: Any, wanted: str, current: RingPacket) -> str:
        if wanted == "keyframes":
            codec.skip_frame = "NONKEY"
        else:
            codec.skip_frame = "DEFAULT"
            # Rebuild the reference frames skipped since the last keyframe, so full decode starts now.
            codec.flush_buffers()
            replay = [p for p in self.ring.since_last_keyframe(conn.number) if p is not current]
            for old in replay:
                packet = av.Packet(old.data)
                packet.pts, packet.dts = old.pts, old.dts
                packet.time_base = conn.stream.time_base
                try:
                    for _ in codec.decode(packet):
                        self.frames_decoded += 1
                except av.error.FFmpegError:
                    break
        self.decode_mode = wanted
        log.debug("camera %s: decoding %s", self.config.camera_id, wanted)
        return wanted

    # -- clips (called under conn.lock) ---------------------------------------------------------------

    def _serve_clips(self, conn: _Connection, newest: RingPacket) -> None:
        if newest.is_keyframe:
            if conn.last_key_s is not None:
                conn.gop_s = newest.time_s - conn.last_key_s
            conn.last_key_s = newest.time_s
        with self._clip_lock:
            while True:
                try:
                    request = self._clip_requests.get_nowait()
                except queue.Empty:
                    break
                self._start_recording(conn, request, newest)
            for recording in self._recordings:
                self._advance(conn, recording, newest)
            self._drop_done()

    def _event_time(
        self, conn: _Connection, time_s: float, connection: int, wall_time: float
    ) -> float | None:
        if self.decode and connection == conn.number:
            return time_s
        if wall_time and conn.wall_offset is not None:
            return wall_time - conn.wall_offset
        return None

    def _end_s(self, conn: _Connection, request: ClipRequest) -> float | None:
        """Stream time on `conn` where the recording stops for now: the last sighting plus the post-roll."""
        seen = request.handle.last
        if seen is None:
            event_s = self._event_time(conn, request.time_s, request.connection, request.wall_time)
        else:
            event_s = self._event_time(conn, seen.time_s, seen.connection, seen.wall_time)
        return None if event_s is None else event_s + request.post_roll_s

    def _start_recording(self, conn: _Connection, request: ClipRequest, newest: RingPacket) -> None:
        event_s = self._event_time(conn, request.time_s, request.connection, request.wall_time)
        if event_s is None:
            self._report(
                request, ClipResult(None, 0, 0, 0, None, None, error="camera reconnected before the clip")
            )
            request.handle.mark_finished()
            return
        recording = _Recording(request, connection=conn.number)
        self._recordings.append(recording)
        pre_roll = self.ring.since_keyframe_near(event_s - request.pre_roll_s, conn.number)
        self._open_file(conn, recording, pre_roll)

    def _advance(self, conn: _Connection, recording: _Recording, newest: RingPacket) -> None:
        """One packet for one recording: write it, cut a continuation at a keyframe, stop, or resume."""
        request = recording.request
        if recording.done:
            return
        writer = recording.writer
        if writer is not None and recording.connection != conn.number:
            return  # an abandoned connection's file: closed when that connection finishes
        if recording.written is newest:
            return  # written when the file was opened
        end_s = self._end_s(conn, request)
        if writer is None:
            if request.handle.released or time.monotonic() - recording.idle_since > IDLE_RECORDING_S:
                self._finish_recording(recording)
            elif end_s is not None and newest.time_s <= end_s:  # seen again: a continuation
                self._open_file(conn, recording, self._resume_packets(conn, recording, end_s))
            return
        if end_s is None or newest.time_s > end_s:
            self._close_file(conn, recording, resume_s=newest.time_s)
            if request.handle.released:
                self._finish_recording(recording)
            return
        cap = request.max_clip_s
        started = writer.start_time_s
        # At a keyframe: cut unless the next one (a GOP on) still fits, so each file stays within the cap.
        if (
            cap > 0
            and newest.is_keyframe
            and started is not None
            and newest.time_s - started + conn.gop_s > cap + 1e-3
        ):
            self._close_file(conn, recording, resume_s=newest.time_s)
            self._open_file(conn, recording, [newest])
            return
        writer.write(newest)

    def _resume_packets(self, conn: _Connection, recording: _Recording, end_s: float) -> list[RingPacket]:
        """A continuation's first packets from the ring: on the same connection from the last keyframe at or
        before where the previous file stopped (no gap); after a reconnect from the new connection's keyframe
        nearest the pre-roll before the sighting (its first one when the sighting came before it)."""
        request = recording.request
        packets = [p for p in self.ring.snapshot() if p.connection == conn.number]
        if recording.connection == conn.number and recording.resume_s is not None:
            keys = [i for i, p in enumerate(packets) if p.is_keyframe]
            before = [i for i in keys if packets[i].time_s <= recording.resume_s + 1e-6]
            if keys and not before:
                log.warning(
                    "camera %s: clip continuation starts %.1f s after the previous file (ring too short)",
                    self.config.camera_id,
                    packets[keys[0]].time_s - recording.resume_s,
                )
            start = before[-1] if before else (keys[0] if keys else len(packets))
            return packets[start:]
        return self.ring.since_keyframe_near(end_s - request.post_roll_s - request.pre_roll_s, conn.number)

    def _open_file(self, conn: _Connection, recording: _Recording, packets: list[RingPacket]) -> None:
        request = recording.request
        name = (
            f"{self.config.camera_id}-{conn.number}-{request.time_s:.3f}-{id(request):x}"
            f"-{recording.sequence}.mp4"
        )
        writer = ClipWriter(self._clip_dir / name, conn.stream)
        for packet in packets:
            writer.write(packet)
        recording.writer = writer
        recording.connection = conn.number
        recording.resume_s = None
        recording.written = packets[-1] if packets else None

    def _close_file(self, conn: _Connection, recording: _Recording, resume_s: float | None) -> None:
        writer = recording.writer
        assert writer is not None
        recording.writer = None
        recording.written = None
        recording.resume_s = resume_s
        recording.idle_since = time.monotonic()
        result = writer.close()
        started_at = None
        if writer.start_time_s is not None and conn.wall_offset is not None:
            started_at = conn.wall_offset + writer.start_time_s
        result = dataclasses.replace(
            result,
            sequence=recording.sequence,
            started_at=started_at,
            stream_start_s=writer.start_time_s,
            connection=recording.connection,
        )
        if result.path is not None:
            recording.sequence += 1  # a file that came to nothing leaves its number to the next one
        self._report(recording.request, result)

    def _finish_recording(self, recording: _Recording) -> None:
        recording.done = True
        recording.request.handle.mark_finished()

    def _drop_done(self) -> None:
        self._recordings = [r for r in self._recordings if not r.done]

    def _report(self, request: ClipRequest, result: ClipResult) -> None:
        try:
            request.on_done(result)
        except Exception:
            log.exception("clip callback failed for camera %s", self.config.camera_id)

    def _finish_clips(self, conn: _Connection, force: bool) -> None:
        """The connection ended: close its files (what was recorded is kept). A recording whose event goes
        on continues in a new file on the next connection; stopping ends every recording."""
        stopping = force and self._stop_event.is_set()
        with self._clip_lock:
            for recording in self._recordings:
                if recording.writer is not None and (recording.connection == conn.number or stopping):
                    self._close_file(conn, recording, resume_s=None)
                if stopping or (recording.writer is None and recording.request.handle.released):
                    self._finish_recording(recording)
            self._drop_done()
        if stopping:
            self._end_recordings()

    def _end_recordings(self) -> None:
        """The source stops: recordings between files end, requests not yet served fail."""
        with self._clip_lock:
            for recording in self._recordings:
                if recording.writer is None:
                    self._finish_recording(recording)
            self._drop_done()
        while True:
            try:
                request = self._clip_requests.get_nowait()
            except queue.Empty:
                break
            self._report(request, ClipResult(None, 0, 0, 0, None, None, error="camera source stopped"))
            request.handle.mark_finished()


class CameraSource:
    """A camera: its detect stream (decoded, frames into `slot`) and, if configured, its record stream."""

    def __init__(
        self,
        config: SourceConfig,
        slot: FrameSlot,
        clip_dir: Path | None = None,
        on_state: Callable[[StateChange], None] | None = None,
        motion: MotionFunction | None = None,
    ) -> None:
        self.config = config
        self.slot = slot
        clip_dir = clip_dir or Path(tempfile.gettempdir())
        self.ring = PacketRing(config.ring_seconds)
        self.detect = StreamLoop(config, config.url, "detect", self.ring, slot, clip_dir, on_state, motion)
        self.record: StreamLoop | None = None
        if config.record_url:
            self.record_ring = PacketRing(config.ring_seconds)
            self.record = StreamLoop(
                config, config.record_url, "record", self.record_ring, None, clip_dir, on_state
            )

    @property
    def camera_id(self) -> str:
        return self.config.camera_id

    @property
    def state(self) -> StreamState:
        return self.detect.machine.state

    def start(self) -> None:
        self.detect.start()
        if self.record is not None:
            self.record.start()

    def stop(self) -> None:
        self.detect.stop()
        if self.record is not None:
            self.record.stop()

    def join(self, timeout: float | None = None) -> None:
        self.detect.join(timeout)
        if self.record is not None:
            self.record.join(timeout)

    def is_alive(self) -> bool:
        return self.detect.is_alive() or (self.record is not None and self.record.is_alive())

    def request_clip(self, request: ClipRequest) -> None:
        """Clips come from the record stream if there is one (found by wall clock), else the detect stream."""
        (self.record or self.detect).request_clip(request)

    def hold_active(self, seconds: float) -> None:
        self.detect.hold_active(seconds)

    def health(self) -> dict[str, StreamHealth]:
        out = {"detect": self.detect.health()}
        if self.record is not None:
            out["record"] = self.record.health()
        return out
