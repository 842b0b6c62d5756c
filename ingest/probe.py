"""Probe a camera before registering it: open it, sample a few seconds of packets, report what it sends.

`probe_camera` never raises for a bad camera or a bad URL: every failure comes back as a `ProbeResult`
with ``ok=False``, an `error_kind` an admin tool can act on, and an error text with the password removed.
A refused URL (wrong scheme, link-local host...) is reported as ``error_kind="refused_url"`` rather than
raised, so a caller prints every outcome the same way.

Measured values come from packet timestamps and sizes (no decoding), except the pixel format, which is
read from one decoded keyframe; that decode also tells whether FFmpeg can decode the stream at all.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from typing import Any

import av

from ingest.camera_open import CameraURL, OpenFailed, open_camera
from ingest.errors import ErrorKind, describe_error
from ingest.urls import redact_text

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a camera sends, measured over a short sample. No field ever holds the password."""

    url: str
    ok: bool
    error: str | None
    error_kind: ErrorKind | None
    elapsed_s: float
    video_codec: str | None = None
    profile: str | None = None
    width: int | None = None
    height: int | None = None
    pixel_format: str | None = None
    fps_measured: float | None = None
    fps_declared: float | None = None
    gop_frames: float | None = None
    gop_seconds: float | None = None
    bitrate_kbps: float | None = None
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    sampled_seconds: float | None = None
    packets: int = 0
    keyframes: int = 0
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain str/int/float/bool/None and lists only."""
        data = dataclasses.asdict(self)
        data["warnings"] = list(self.warnings)
        return data


def probe_camera(
    url: str,
    *,
    open_timeout_s: float = 10,
    read_timeout_s: float = 10,
    sample_seconds: float = 4.0,
) -> ProbeResult:
    """Open `url`, read `sample_seconds` of stream time (at most that plus `read_timeout_s` of wall time)."""
    started = time.monotonic()
    camera = CameraURL.of(url)
    try:
        container = open_camera(camera, open_timeout_s, read_timeout_s)
    except OpenFailed as failed:
        result = _failure(camera.shown, failed.kind, failed.message, started)
        log.info("probe of %s failed (%s): %s", camera.shown, failed.kind, result.error)
        return result
    log.info("probing %s", camera.shown)
    with container:
        result = _measure(container, camera.shown, camera.secrets, started, read_timeout_s, sample_seconds)
    log.info("probe of %s: %s", camera.shown, "ok" if result.ok else f"{result.error_kind}: {result.error}")
    return result


def format_probe(result: ProbeResult) -> str:
    """A short human-readable report, one fact a line."""
    lines = [f"Camera      {result.url}"]
    if result.ok:
        lines.append(f"Status      OK (probed in {result.elapsed_s:.1f} s)")
    else:
        lines.append(
            f"Status      FAILED [{result.error_kind}] {result.error} (after {result.elapsed_s:.1f} s)"
        )
    if result.video_codec is not None:
        video = result.video_codec + (f" ({result.profile})" if result.profile else "")
        if result.width and result.height:
            video += f", {result.width}x{result.height}"
        if result.pixel_format:
            video += f", {result.pixel_format}"
        lines.append(f"Video       {video}")
        lines.append(
            f"Frame rate  {_number(result.fps_measured, '.2f')} fps measured, "
            f"{_number(result.fps_declared, '.2f')} declared"
        )
        gop = "unknown (fewer than two keyframes in the sample)"
        if result.gop_frames is not None:
            gop = f"{result.gop_frames:g} frames ({_number(result.gop_seconds, '.2f')} s)"
        lines.append(f"GOP         {gop}")
        lines.append(f"Bitrate     {_number(result.bitrate_kbps, '.0f')} kbit/s")
        lines.append(
            f"Sample      {result.packets} packets, {result.keyframes} keyframes, "
            f"{_number(result.sampled_seconds, '.1f')} s of stream time"
        )
        audio = "none"
        if result.audio_codec is not None:
            audio = result.audio_codec
            if result.audio_sample_rate:
                audio += f", {result.audio_sample_rate} Hz"
            if result.audio_channels:
                audio += f", {result.audio_channels} ch"
        lines.append(f"Audio       {audio}")
    lines.extend(f"Warning     {warning}" for warning in result.warnings)
    return "\n".join(lines)


# -- measuring an open stream ------------------------------------------------------------------------


class _PacketSample:
    """Timestamps, sizes and keyframe positions of the video packets read so far."""

    def __init__(self, time_base: Fraction) -> None:
        self.time_base = time_base
        self.count = 0
        self.total_bytes = 0
        self.times: list[float] = []
        self.keyframe_indexes: list[int] = []
        self.keyframe_times: list[float | None] = []

    def add(self, packet: Any) -> None:
        raw = packet.dts if packet.dts is not None else packet.pts
        at = float(raw * self.time_base) if raw is not None else None
        if at is not None:
            self.times.append(at)
        if packet.is_keyframe:
            self.keyframe_indexes.append(self.count)
            self.keyframe_times.append(at)
        self.count += 1
        self.total_bytes += packet.size

    @property
    def span_s(self) -> float:
        return max(self.times) - min(self.times) if len(self.times) > 1 else 0.0

    def fps(self) -> float | None:
        distinct = sorted(set(self.times))
        if len(distinct) < 2 or distinct[-1] <= distinct[0]:
            return None
        return (len(distinct) - 1) / (distinct[-1] - distinct[0])

    def gop(self, fps: float | None) -> tuple[float | None, float | None]:
        """Median distance between consecutive keyframes, in frames and in seconds."""
        indexes, times = self.keyframe_indexes, self.keyframe_times
        if len(indexes) < 2:
            return None, None
        frames = float(statistics.median(b - a for a, b in pairwise(indexes)))
        gaps = [b - a for a, b in pairwise(times) if a is not None and b is not None]
        if gaps:
            seconds: float | None = float(statistics.median(gaps))
        else:
            seconds = frames / fps if fps else None
        return frames, seconds

    def bitrate_kbps(self, fps: float | None) -> float | None:
        if self.span_s <= 0:
            return None
        duration = self.span_s + (1 / fps if fps else 0.0)  # n packets cover n frame durations
        return self.total_bytes * 8 / duration / 1000


def _measure(
    container: Any,
    shown: str,
    secrets: tuple[str, ...],
    started: float,
    read_timeout_s: float,
    sample_seconds: float,
) -> ProbeResult:
    audio = _audio_info(container)
    if not container.streams.video:
        found = ", ".join(f"{s.type} {_codec_name(s)}" for s in container.streams) or "no streams"
        return _failure(
            shown, "no_video", f"the stream has no video track (found: {found})", started, **audio
        )

    stream = container.streams.video[0]
    codec_context = stream.codec_context
    codec_context.thread_type = "SLICE"  # a keyframe decodes without frame-thread delay
    sample = _PacketSample(stream.time_base or Fraction(1, 90000))
    warnings: list[str] = []
    pixel_format: str | None = None
    decode_error: str | None = None
    read_error: tuple[ErrorKind, str] | None = None
    deadline = time.monotonic() + sample_seconds + read_timeout_s
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the empty packet PyAV yields at end of stream
                continue
            sample.add(packet)
            if pixel_format is None and packet.is_keyframe:
                pixel_format, decode_error = _decode_keyframe(codec_context, packet)
            if sample.span_s >= sample_seconds:
                break
            if time.monotonic() >= deadline:
                warnings.append(f"wall-time limit reached after {sample.span_s:.1f} s of stream time")
                break
        else:
            warnings.append(f"the stream ended after {sample.span_s:.1f} s of stream time")
    except (av.error.ExitError, TimeoutError):
        read_error = ("timeout", f"no video packet for {read_timeout_s:g} s (the stream stalled)")
    except Exception as exc:  # a read error ends the sample; what was read is still reported
        read_error = ("error", f"read error: {describe_error(exc)}")
    if read_error is not None:
        warnings.append(redact_text(read_error[1], *secrets))

    fps = sample.fps()
    gop_frames, gop_seconds = sample.gop(fps)
    if sample.count and len(sample.keyframe_indexes) < 2:
        warnings.append("fewer than two keyframes in the sample: the GOP is longer than the sample")

    kind: ErrorKind | None = None
    error: str | None = None
    if sample.count == 0:
        kind, error = read_error or ("timeout", "no video packet arrived")
    elif pixel_format is None and decode_error is not None:
        kind, error = "unsupported", f"cannot decode {codec_context.name}: {decode_error}"
    elif pixel_format is None:
        warnings.append("no keyframe in the sample: the stream could not be test-decoded")

    return ProbeResult(
        url=shown,
        ok=kind is None,
        error=redact_text(error, *secrets) if error else None,
        error_kind=kind,
        elapsed_s=round(time.monotonic() - started, 3),
        video_codec=codec_context.name,
        profile=codec_context.profile,
        width=codec_context.width or None,
        height=codec_context.height or None,
        pixel_format=pixel_format or codec_context.pix_fmt,
        fps_measured=_rounded(fps),
        fps_declared=_rounded(float(stream.average_rate) if stream.average_rate else None),
        gop_frames=gop_frames,
        gop_seconds=_rounded(gop_seconds),
        bitrate_kbps=_rounded(sample.bitrate_kbps(fps), 1),
        sampled_seconds=_rounded(sample.span_s),
        packets=sample.count,
        keyframes=len(sample.keyframe_indexes),
        warnings=tuple(warnings),
        **audio,
    )


def _decode_keyframe(codec_context: Any, packet: Any) -> tuple[str | None, str | None]:
    """Decode one keyframe: (pixel format, None) or (None, why it failed)."""
    try:
        frames = codec_context.decode(packet) or codec_context.decode(None)
    except Exception as exc:
        return None, describe_error(exc)
    if not frames:
        return None, "the decoder returned no frame for a keyframe"
    return frames[0].format.name, None


def _audio_info(container: Any) -> dict[str, Any]:
    if not container.streams.audio:
        return {}
    context = container.streams.audio[0].codec_context
    return {
        "audio_codec": context.name,
        "audio_sample_rate": context.sample_rate or None,
        "audio_channels": context.channels or None,
    }


def _codec_name(stream: Any) -> str:
    try:
        return str(stream.codec_context.name)
    except Exception:
        return "unknown"


def _failure(shown: str, kind: ErrorKind, message: str, started: float, **fields: Any) -> ProbeResult:
    return ProbeResult(
        url=shown,
        ok=False,
        error=message,
        error_kind=kind,
        elapsed_s=round(time.monotonic() - started, 3),
        **fields,
    )


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _number(value: float | None, spec: str) -> str:
    return "?" if value is None else format(value, spec)
