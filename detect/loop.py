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


@dataclass(slots=True)
class LoopStats:
    frames: int = 0
    errors: int = 0
    busy_s: float = 0.0
    last_latency_s: float = 0.0


class DetectorLoop(threading.Thread):
    """Round-robin over the cameras' latest-frame slots; one frame per camera per turn, newest wins."""

    def __init__(
        self,
        slots: Mapping[str, FrameSlot],
        detectors: list[Detector],
        on_result: Callable[[Frame, Detections], object],
        idle_wait_s: float = 0.02,
    ) -> None:
        super().__init__(name="detector", daemon=True)
        self.slots = slots
        self.detectors = detectors
        self.on_result = on_result
        self.idle_wait_s = idle_wait_s
        self.stats = LoopStats()
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            worked = False
            for slot in list(self.slots.values()):
                frame = slot.take()
                if frame is None:
                    continue
                worked = True
                self.process(frame)
                if self._stop_event.is_set():
                    return
            if not worked:
                self._stop_event.wait(self.idle_wait_s)

    def process(self, frame: Frame) -> Detections:
        started = time.perf_counter()
        try:
            detections = Detections.merge([d.detect(frame.image) for d in self.detectors])
        except Exception:
            self.stats.errors += 1
            log.exception("detector failed on a frame of camera %s", frame.camera_id)
            return Detections.empty(())
        self.stats.frames += 1
        self.stats.busy_s += time.perf_counter() - started
        self.stats.last_latency_s = time.time() - frame.captured_at
        try:
            self.on_result(frame, detections)
        except Exception:
            log.exception("alert handling failed for camera %s", frame.camera_id)
        return detections
