"""The naive detection loop, as tutorials write it: the reference that bench/pipeline.py measures against.

One thread per camera: ``cv2.VideoCapture(rtsp_url)`` (FFmpeg backend, RTSP over TCP), ``read()`` every frame
and run every model on every frame (one shared NanoDet-m and fire YOLO, ONNX Runtime, 1 thread each), then
the same tracker and rules as GridWatch (``alerts.evaluator.FrameEvaluator``), so both raise the same alerts
for the same detections. Nothing is dropped on purpose: when the models are slower than the camera, frames
queue up in FFmpeg and the socket, and the loop falls behind the live stream.

Timing: OpenCV gives a frame's stream time (``CAP_PROP_POS_MSEC``, 0 at the first frame) but not when it
arrived, so its capture (arrival) time is bracketed: no earlier than stream time + the wall time just
before ``cv2.VideoCapture()`` was called (the RTSP handshake and probing take 1-4 s under load), no later
than stream time + ``min(read wall time - stream time)`` over the frames read (tight once the loop keeps up;
while it lags, late by up to the 2-3 s of frames OpenCV buffers while probing). Latencies use the later
bound, so they favour the naive loop; matching alerts to ground truth accepts the whole bracket. An alert's
latency is ``time the rule raised it - capture time``: it includes the backlog but no bus round trip (the
naive loop publishes nothing).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Read by OpenCV's FFmpeg backend when a capture opens; tutorials set it to get RTSP over TCP.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")

import cv2

from alerts.evaluator import FrameEvaluator
from alerts.rules import Rule, RuleEngine
from detect.detections import Detections
from detect.loop import Detector
from ingest.frames import Frame


@dataclass(frozen=True, slots=True)
class NaiveAlert:
    camera_id: str
    label: str
    stream_s: float  # the frame's stream time
    read_at: float  # wall time read() returned the frame
    raised_at: float  # wall time the rule raised the alert


@dataclass(slots=True)
class NaiveCamera:
    """One camera's counters; written by its thread, read by anyone (plain values, no lock needed)."""

    camera_id: str
    frames: int = 0
    opened: bool = False
    error: str | None = None
    connect_at: float = math.inf  # wall time just before VideoCapture(): stream time 0 arrived after it
    offset: float = math.inf  # min(read wall time - stream time): stream time 0 arrived before it
    last_stream_s: float = 0.0
    busy_s: float = 0.0  # time in the models
    alerts: list[NaiveAlert] = field(default_factory=list)

    def captured_at(self, stream_s: float) -> float:
        """The latest the frame can have arrived."""
        return stream_s + self.offset

    def earliest_capture(self, stream_s: float) -> float:
        return stream_s + self.connect_at

    def lag_s(self, now: float) -> float:
        """How far the newest frame read is behind the live stream, in seconds (at least)."""
        if not self.frames or not math.isfinite(self.offset):
            return 0.0
        return max(0.0, now - self.captured_at(self.last_stream_s))


class NaiveLoop:
    """Start one reader-and-detector thread per camera; `stop()` and `join()` end them."""

    def __init__(
        self,
        urls: Mapping[str, str],
        detectors: Sequence[Detector],
        rules: Sequence[Rule],
        camera_fps: float = 10.0,
    ) -> None:
        self.urls = dict(urls)
        self.detectors = list(detectors)
        self.rules = list(rules)
        self.camera_fps = camera_fps
        self.cameras = {camera_id: NaiveCamera(camera_id) for camera_id in self.urls}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(camera_id, url), name=f"naive-{camera_id}", daemon=True)
            for camera_id, url in self.urls.items()
        ]

    def start(self) -> NaiveLoop:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def frames(self) -> int:
        return sum(camera.frames for camera in self.cameras.values())

    def _run(self, camera_id: str, url: str) -> None:
        camera = self.cameras[camera_id]
        camera.connect_at = time.time()
        capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            camera.error = "cv2.VideoCapture could not open the stream"
            return
        camera.opened = True
        evaluator = FrameEvaluator(RuleEngine(self.rules))
        try:
            while not self._stop.is_set():
                ok, image = capture.read()
                read_at = time.time()
                if not ok:
                    camera.error = "read() returned no frame (end of stream)"
                    return
                stream_s = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if not math.isfinite(stream_s) or stream_s <= 0:
                    stream_s = camera.frames / self.camera_fps
                camera.offset = min(camera.offset, read_at - stream_s)
                started = time.perf_counter()
                detections = Detections.merge([detector.detect(image) for detector in self.detectors])
                camera.busy_s += time.perf_counter() - started
                # The tracker's clock: the fixed early anchor keeps it monotonic in stream time.
                frame = Frame(camera_id, image, stream_s, camera.earliest_capture(stream_s), 1, camera.frames)
                _, triggers = evaluator.evaluate(frame, detections)
                raised_at = time.time()
                camera.alerts.extend(
                    NaiveAlert(camera_id, trigger.label, stream_s, read_at, raised_at) for trigger in triggers
                )
                camera.last_stream_s = stream_s
                camera.frames += 1
        finally:
            capture.release()
