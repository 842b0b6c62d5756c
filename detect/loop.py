"""The detector thread: takes the newest frame of each camera and runs every model on a batch of them."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from detect.crops import CropPolicy, Rect, plan_crops
from detect.detections import Detections
from detect.nanodet import per_class_nms
from ingest.frames import Frame, FrameSlot

log = logging.getLogger(__name__)

# A model's inputs for a batch: the images, and for each its frame's index and crop (None: the whole frame)
Plan = tuple[list[np.ndarray], list[tuple[int, "Rect | None"]]]


class Detector(Protocol):
    names: tuple[str, ...]

    def detect(self, frame_bgr: np.ndarray) -> Detections: ...

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]: ...


@dataclass(slots=True)
class LoopStats:
    frames: int = 0
    batches: int = 0
    skipped_still: int = 0  # frames not run because nothing moved and the refresh was not due
    skipped_unchanged: int = 0  # refreshes put off because the picture had not changed (`refresh_max_s`)
    errors: int = 0
    busy_s: float = 0.0
    model_inputs: int = 0  # images given to the models: whole frames plus crops, summed over models
    crop_inputs: int = 0  # of which crops
    last_latency_s: float = 0.0
    # Capture (packet arrival) to detections ready, for the most recent frames.
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=2000))


def input_size(detector: object) -> int | None:
    """The model's square input side, if the detector says (region crops need it)."""
    size = getattr(detector, "input_size", None) or getattr(detector, "imgsz", None)
    return int(size) if size else None


class DetectorLoop(threading.Thread):
    """One detector thread for many cameras.

    Each turn takes the newest frame of every camera (newest wins in the slots; the slots count the frames
    dropped), drops frames of still cameras unless their periodic refresh is due (so parked cars and other
    stationary things stay known), waits up to `batch_timeout_s` for more cameras to fill a batch of
    `max_batch`, and runs every model once per batch. With a `crops` policy, frames whose motion lies in
    small regions are run as crops around them (small, far objects reach the model larger); every camera
    still gets a whole-frame run at least every `refresh_s`. `follow(camera)` true keeps a still camera's
    frames running (it has an object in view that moved and has not settled: a person who stopped).
    `clock` (seconds) drives the refresh logic, so offline evaluations can run on stream time. With
    `workers` > 1 the models' calls for a batch run in parallel on that many inference threads.

    A refresh is put off, up to `refresh_max_s`, while the picture has not changed since the camera's last
    run: no cell of a 32x24 grey thumbnail moved by more than `unchanged_level` grey levels. Something that
    crept in too slowly for the motion gate (a car parked at walking pace, smoke thickening) changes its
    cells and gets the refresh on time; a still street at night costs one run a minute instead of six.
    """

    def __init__(
        self,
        slots: Mapping[str, FrameSlot],
        detectors: list[Detector],
        on_result: Callable[[Frame, Detections], object],
        idle_wait_s: float = 0.5,
        max_batch: int = 4,
        refresh_s: float = 10.0,
        batch_timeout_s: float = 0.0,
        crops: CropPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        follow: Callable[[str], bool] | None = None,
        refresh_max_s: float | None = None,
        unchanged_level: float = 8.0,
        workers: int = 1,
    ) -> None:
        super().__init__(name="detector", daemon=True)
        self.slots = slots
        self.detectors = detectors
        self.on_result = on_result
        self.idle_wait_s = idle_wait_s
        self.max_batch = max_batch
        self.refresh_s = refresh_s
        self.batch_timeout_s = batch_timeout_s
        self.crops = crops
        self.clock = clock
        self.follow = follow
        self.refresh_max_s = refresh_max_s  # None: never put off (the refresh comes every refresh_s)
        self.unchanged_level = unchanged_level
        self.workers = max(1, workers)
        self._pool = (
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="inference")
            if self.workers > 1
            else None
        )
        self.stats = LoopStats()
        self._last_run: dict[str, float] = {}
        self._last_picture: dict[str, np.ndarray] = {}  # thumbnail of each camera's last run
        self._last_whole: dict[str, float] = {}
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._listening: set[int] = set()

    @property
    def dropped(self) -> int:
        """Frames replaced in their slot before the detector took them (all cameras)."""
        return sum(slot.dropped for slot in list(self.slots.values()))

    def stop(self) -> None:
        self._stop_event.set()
        self._wake.set()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self._wake.clear()
                batch = self.collect()
                if not batch:
                    self._wake.wait(self.idle_wait_s)
                    continue
                if len(batch) < self.max_batch and self.batch_timeout_s > 0:
                    batch = self._fill(batch)
                for start in range(0, len(batch), self.max_batch):
                    self.process_batch(batch[start : start + self.max_batch])
                    if self._stop_event.is_set():
                        return
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False)

    def _fill(self, batch: list[Frame]) -> list[Frame]:
        """Wait up to the batch timeout for other cameras' frames (a newer frame of a camera replaces its
        older one)."""
        by_camera = {f.camera_id: f for f in batch}
        deadline = time.monotonic() + self.batch_timeout_s
        while len(by_camera) < self.max_batch and not self._stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._wake.wait(left)
            self._wake.clear()
            for frame in self.collect():
                by_camera[frame.camera_id] = frame
        return list(by_camera.values())

    def collect(self) -> list[Frame]:
        """The frames worth running now: one per camera, still cameras only when their refresh is due."""
        now = self.clock()
        frames: list[Frame] = []
        for camera_id, slot in list(self.slots.items()):
            if id(slot) not in self._listening:
                slot.listen(self._wake)
                self._listening.add(id(slot))
            frame = slot.take()
            if frame is None:
                continue
            picture: np.ndarray | None = None
            if not frame.motion and not (self.follow is not None and self.follow(camera_id)):
                since = now - self._last_run.get(camera_id, -1e9)
                if since < self.refresh_s:
                    self.stats.skipped_still += 1
                    continue
                picture = thumbnail(frame.image)
                if since < (self.refresh_max_s or 0.0) and self._unchanged(camera_id, picture):
                    self.stats.skipped_unchanged += 1
                    continue
            elif (self.refresh_max_s or 0.0) > self.refresh_s:
                picture = thumbnail(frame.image)
            self._last_run[camera_id] = now
            if picture is not None:
                self._last_picture[camera_id] = picture
            frames.append(frame)
        return frames

    def _unchanged(self, camera_id: str, picture: np.ndarray) -> bool:
        last = self._last_picture.get(camera_id)
        if last is None or last.shape != picture.shape:
            return False
        return float(np.abs(picture - last).max()) <= self.unchanged_level

    def process(self, frame: Frame) -> Detections:
        return self.process_batch([frame])[0]

    def process_batch(self, frames: list[Frame]) -> list[Detections]:
        if not frames:
            return []
        started = time.perf_counter()
        now = self.clock()
        whole = [self._whole_frame_due(f, now) for f in frames]
        try:
            per_model = self._run_models(frames, whole)
        except Exception:
            self.stats.errors += 1
            log.exception("detector failed on frames of %s", ", ".join(f.camera_id for f in frames))
            return [Detections.empty(()) for _ in frames]
        results = [Detections.merge([model[i] for model in per_model]) for i in range(len(frames))]
        for i, frame in enumerate(frames):
            if not any(model[i].coverage for model in per_model):
                self._last_whole[frame.camera_id] = now
        self.stats.frames += len(frames)
        self.stats.batches += 1
        self.stats.busy_s += time.perf_counter() - started
        wall = time.time()
        for frame, detections in zip(frames, results, strict=True):
            self.stats.last_latency_s = wall - frame.captured_at
            self.stats.latencies_s.append(self.stats.last_latency_s)
            try:
                self.on_result(frame, detections)
            except Exception:
                log.exception("alert handling failed for camera %s", frame.camera_id)
        return results

    def _whole_frame_due(self, frame: Frame, now: float) -> bool:
        if self.crops is None or not frame.regions:
            return True
        return now - self._last_whole.get(frame.camera_id, -1e9) >= self.refresh_s

    def _run_models(self, frames: list[Frame], whole: list[bool]) -> list[list[Detections]]:
        """Every model over the batch: each frame whole, or as crops around its motion regions.

        With `workers` > 1 the model calls (each model's inputs split into up to `workers` chunks) run on a
        pool, so the models and the halves of a batch use the other cores: ONNX Runtime and OpenVINO release
        the GIL while they infer. A detector with `thread_safe = False` runs on this thread.
        """
        plans = [self._plan(d, frames, whole) for d in self.detectors]
        outputs = self._infer(plans)
        results: list[list[Detections]] = []
        done = 0
        for detector, (images, owners) in zip(self.detectors, plans, strict=True):
            mine: list[Detections] = []
            while len(mine) < len(images):
                mine += outputs[done]
                done += 1
            self.stats.model_inputs += len(images)
            self.stats.crop_inputs += sum(1 for _, crop in owners if crop is not None)
            parts: list[list[tuple[Detections, Rect | None]]] = [[] for _ in frames]
            for (i, crop), result in zip(owners, mine, strict=True):
                parts[i].append((result, crop))
            results.append([_from_crops(p, detector.names) for p in parts])
        return results

    def seconds_per_frame(self, image: np.ndarray, repeats: int = 3) -> float:
        """Wall seconds one whole frame costs all the models, run in full batches as this loop runs them
        (on its pool with `workers` > 1): the median of `repeats` timed batches after one warm-up. For a
        worker's capacity before it has measured real load; touches no stats and calls no `on_result`."""
        images = [image] * self.max_batch
        whole: list[tuple[int, Rect | None]] = [(i, None) for i in range(len(images))]
        plans: list[Plan] = [(images, whole) for _ in self.detectors]
        times = []
        for run in range(repeats + 1):
            started = time.perf_counter()
            self._infer(plans)
            if run:
                times.append(time.perf_counter() - started)
        return float(np.median(times)) / len(images)

    def _infer(
        self, plans: list[tuple[list[np.ndarray], list[tuple[int, Rect | None]]]]
    ) -> list[list[Detections]]:
        """The model calls for the plans, in order: each model's inputs in chunks of at most `max_batch`."""
        calls: list[tuple[Detector, list[np.ndarray]]] = []
        for detector, (images, _owners) in zip(self.detectors, plans, strict=True):
            size = self.max_batch
            if self._pool is not None and getattr(detector, "thread_safe", True):
                size = max(1, min(self.max_batch, -(-len(images) // self.workers)))
            calls += [(detector, images[i : i + size]) for i in range(0, len(images), size)]
        pooled = [
            self._pool.submit(d.detect_batch, chunk)
            if self._pool is not None and getattr(d, "thread_safe", True)
            else None
            for d, chunk in calls
        ]
        return [
            future.result() if future is not None else detector.detect_batch(chunk)
            for (detector, chunk), future in zip(calls, pooled, strict=True)
        ]

    def _plan(self, detector: Detector, frames: list[Frame], whole: list[bool]) -> Plan:
        """The model's inputs for the batch, each with its frame's index and its crop (None: whole frame)."""
        size = input_size(detector)
        images: list[np.ndarray] = []
        owners: list[tuple[int, Rect | None]] = []
        for i, frame in enumerate(frames):
            height, width = frame.image.shape[:2]
            plan = None
            if not whole[i] and size is not None and self.crops is not None:
                plan = plan_crops(frame.regions, width, height, size, self.crops)
            if plan is None:
                images.append(frame.image)
                owners.append((i, None))
                continue
            for rect in plan:
                images.append(frame.image[rect[1] : rect[3], rect[0] : rect[2]])
                owners.append((i, rect))
        return images, owners


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A 32x24 grey summary of a frame (each cell the mean of its pixels: sensor noise averages out)."""
    small = cv2.resize(image, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32)
    return small.mean(axis=2) if small.ndim == 3 else small


def _from_crops(parts: list[tuple[Detections, Rect | None]], names: tuple[str, ...]) -> Detections:
    """One frame's detections: a whole-frame result as it is, crop results shifted back and de-duplicated
    (crops may overlap) with per-class NMS."""
    if len(parts) == 1 and parts[0][1] is None:
        return parts[0][0]
    rects = tuple(rect for _, rect in parts if rect is not None)
    boxes = [d.xyxy + np.array([r[0], r[1], r[0], r[1]], np.float32) for d, r in parts if r is not None]
    xyxy = np.concatenate(boxes).astype(np.float32).reshape(-1, 4)
    conf = np.concatenate([d.confidence for d, _ in parts]).astype(np.float32)
    cls = np.concatenate([d.class_id for d, _ in parts]).astype(np.int32)
    keep = per_class_nms(xyxy, conf, cls, 0.5)
    return Detections(xyxy[keep], conf[keep], cls[keep], names, coverage=rects)
