"""One still picture from a camera, for drawing its zones and masks on: open, decode the first keyframe, JPEG.

`grab_frame` never raises for a bad camera or URL: a failure comes back as a `FrameGrab` with ``ok=False``,
an error kind (the probe's kinds) and an error text without the password. It opens one short RTSP session
of its own (a few seconds at most), as the probe does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import av
import cv2

from ingest.camera_open import CameraURL, OpenFailed, open_camera
from ingest.errors import ErrorKind, describe_error

log = logging.getLogger(__name__)

FrameSource = Literal["camera", "worker"]

JPEG_QUALITY = 85
MAX_WIDTH = 1280  # a 4K main stream is shrunk: the editor needs the scene, not the pixels


@dataclass(frozen=True, slots=True)
class FrameGrab:
    """A JPEG of the camera's picture (`width` x `height` as sent), or why there is none."""

    ok: bool
    jpeg: bytes | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    elapsed_s: float = 0.0
    source: FrameSource = "camera"  # "camera": a session of its own; "worker": the frame a worker decoded


def grab_frame(
    url: str,
    *,
    open_timeout_s: float = 10,
    read_timeout_s: float = 10,
    max_width: int = MAX_WIDTH,
) -> FrameGrab:
    """Open `url` and decode its first keyframe, within about `open_timeout_s + read_timeout_s`."""
    started = time.monotonic()
    camera = CameraURL.of(url)
    try:
        container = open_camera(camera, open_timeout_s, read_timeout_s)
    except OpenFailed as failed:
        log.info("frame grab from %s failed (%s)", camera.shown, failed.kind)
        return _failed(failed.kind, failed.message, started)
    with container:
        grabbed = _first_picture(container, started, read_timeout_s, max_width)
    if not grabbed.ok and grabbed.error:
        grabbed = _failed(grabbed.error_kind or "error", camera.redact(grabbed.error), started)
    log.info("frame grab from %s: %s", camera.shown, "ok" if grabbed.ok else grabbed.error_kind)
    return grabbed


def _first_picture(container: Any, started: float, read_timeout_s: float, max_width: int) -> FrameGrab:
    if not container.streams.video:
        return _failed("no_video", "the stream has no video track", started)
    stream = container.streams.video[0]
    stream.codec_context.thread_type = "SLICE"  # a keyframe decodes without frame-thread delay
    deadline = time.monotonic() + read_timeout_s
    seen_keyframe = False
    try:
        for packet in container.demux(stream):
            if time.monotonic() >= deadline:
                break
            if packet.size == 0:
                continue
            seen_keyframe = seen_keyframe or packet.is_keyframe
            if not seen_keyframe:
                continue  # a picture decoded before the first keyframe is grey smear
            for frame in stream.codec_context.decode(packet):
                return encode_picture(frame.to_ndarray(format="bgr24"), max_width, started)
    except (av.error.ExitError, TimeoutError):
        return _failed("timeout", f"no video packet for {read_timeout_s:g} s (the stream stalled)", started)
    except Exception as exc:
        return _failed("error", f"cannot decode a picture: {describe_error(exc)}", started)
    what = "keyframe" if not seen_keyframe else "decodable picture"
    return _failed("timeout", f"no {what} within {read_timeout_s:g} s", started)


def encode_picture(
    image: Any, max_width: int = MAX_WIDTH, started: float | None = None, source: FrameSource = "camera"
) -> FrameGrab:
    """A decoded BGR picture as the JPEG of a `FrameGrab` (shrunk to `max_width`); `started`: the
    monotonic time the grab began (now when None)."""
    started = time.monotonic() if started is None else started
    height, width = image.shape[:2]
    if width > max_width:
        scaled = (max_width, max(1, round(height * max_width / width)))
        image = cv2.resize(image, scaled, interpolation=cv2.INTER_AREA)
    done, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not done:
        return _failed("error", "the picture could not be encoded as JPEG", started)
    return FrameGrab(
        ok=True,
        jpeg=jpeg.tobytes(),
        width=width,
        height=height,
        elapsed_s=time.monotonic() - started,
        source=source,
    )


def _failed(kind: ErrorKind, message: str, started: float) -> FrameGrab:
    return FrameGrab(ok=False, error=message, error_kind=kind, elapsed_s=round(time.monotonic() - started, 3))
