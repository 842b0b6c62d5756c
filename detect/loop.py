"""The detector thread: takes the newest frame of each camera in turn and runs every model on it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from detect.detections import Detections
from ingest.frames import Frame, FrameSlot

log = logging.getLogger(__name__)


class Detector(Protocol):
    names: tuple[str, ...]

    def detect(self, frame_bgr: np.ndarray) -> Detections: ...

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]: ...


@dataclass(slots=True)
class LoopStats:
    frames: int = 0
    batches: int = 0
    skipped_still: int = 0  # frames not run because nothing moved and the refresh was not due
    errors: int = 0
    busy_s: float = 0.0
    last_latency_s: float = 0.0


class DetectorLoop(threading.Thread):
    """One detector thread for many cameras.

    Each turn takes the newest frame of every camera (newest wins in the slots), drops frames of still
    cameras unless their periodic refresh is due (so parked cars and other stationary things stay known),
    and runs every model once on a batch of up to `max_batch` frames.
    """

    def __init__(
        self,
        slots: Mapping[str, FrameSlot],
        detectors: list[Detector],
        on_result: Callable[[Frame, Detections], object],
        idle_wait_s: float = 0.02,
        max_batch: int = 4,
        refresh_s: float = 10.0,
    ) -> None:
        super().__init__(name="detector", daemon=True)
        self.slots = slots
        self.detectors = detectors
        self.on_result = on_result
        self.idle_wait_s = idle_wait_s
        self.max_batch = max_batch
        self.refresh_s = refresh_s
        self.stats = LoopStats()
        self._last_run: dict[str, float] = {}
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            batch = self.collect()
            if not batch:
                self._stop_event.wait(self.idle_wait_s)
                continue
            for start in range(0, len(batch), self.max_batch):
                self.process_batch(batch[start : start + self.max_batch])
                if self._stop_event.is_set():
                    return

    def collect(self) -> list[Frame]:
        """The frames worth running now: one per camera, still cameras only when their refresh is due."""
        now = time.monotonic()
        frames: list[Frame] = []
        for camera_id, slot in list(self.slots.items()):
            frame = slot.take()
            if frame is None:
                continue
            if not frame.motion and now - self._last_run.get(camera_id, -1e9) < self.refresh_s:
                self.stats.skipped_still += 1
                continue
            self._last_run[camera_id] = now
            frames.append(frame)
        return frames

    def process(self, frame: Frame) -> Detections:
        return self.process_batch([frame])[0]

    def process_batch(self, frames: list[Frame]) -> list[Detections]:
        started = time.perf_counter()
        images = [f.image for f in frames]
        try:
            per_model = [d.detect_batch(images) for d in self.detectors]
        except Exception:
            self.stats.errors += 1
            log.exception("detector failed on frames of %s", ", ".join(f.camera_id for f in frames))
            return [Detections.empty(()) for _ in frames]
        results = [Detections.merge([model[i] for model in per_model]) for i in range(len(frames))]
        self.stats.frames += len(frames)
        self.stats.batches += 1
        self.stats.busy_s += time.perf_counter() - started
        now = time.time()
        for frame, detections in zip(frames, results, strict=True):
            self.stats.last_latency_s = now - frame.captured_at
            try:
                self.on_result(frame, detections)
            except Exception:
                log.exception("alert handling failed for camera %s", frame.camera_id)
        return results
