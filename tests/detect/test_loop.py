"""The detector loop: newest frame per camera, still cameras only on refresh, batches across cameras."""

from __future__ import annotations

import threading

import numpy as np

from detect.detections import Detections
from detect.loop import DetectorLoop
from ingest.frames import Frame, FrameSlot

NAMES = ("person",)


class CountingDetector:
    """A stand-in model: one 'person' per frame whose top-left pixel is non-zero; records its batch sizes."""

    names = NAMES

    def __init__(self) -> None:
        self.batches: list[int] = []

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        self.batches.append(len(frames))
        out = []
        for image in frames:
            hit = bool(image[0, 0, 0])
            out.append(
                Detections(
                    np.array([[0, 0, 10, 10]] * hit, np.float32).reshape(-1, 4),
                    np.array([0.9] * hit, np.float32),
                    np.zeros(int(hit), np.int32),
                    NAMES,
                )
            )
        return out


def _frame(camera: str, seq: int, motion: bool, value: int = 1) -> Frame:
    image = np.full((4, 4, 3), value, np.uint8)
    return Frame(camera, image, time_s=seq, captured_at=0.0, connection=1, seq=seq, motion=motion)


def test_batches_across_cameras_and_keeps_only_the_newest_frame() -> None:
    slots = {f"cam{i}": FrameSlot() for i in range(6)}
    results: list[tuple[str, int, int]] = []
    detector = CountingDetector()
    loop = DetectorLoop(
        slots, [detector], lambda f, d: results.append((f.camera_id, f.seq, len(d))), max_batch=4
    )
    for i, slot in enumerate(slots.values()):
        slot.put(_frame(f"cam{i}", 1, motion=True))
        slot.put(_frame(f"cam{i}", 2, motion=True))  # replaces seq 1
    frames = loop.collect()
    for start in range(0, len(frames), loop.max_batch):
        loop.process_batch(frames[start : start + loop.max_batch])
    assert detector.batches == [4, 2]
    assert sorted(results) == [(f"cam{i}", 2, 1) for i in range(6)]
    assert sum(slot.dropped for slot in slots.values()) == 6
    assert loop.stats.frames == 6 and loop.stats.batches == 2


def test_still_cameras_run_only_when_the_refresh_is_due() -> None:
    slot = FrameSlot()
    loop = DetectorLoop({"cam": slot}, [CountingDetector()], lambda f, d: None, refresh_s=3600)
    slot.put(_frame("cam", 1, motion=False))
    assert [f.seq for f in loop.collect()] == [1]  # first frame of a camera always runs
    slot.put(_frame("cam", 2, motion=False))
    assert loop.collect() == []  # still, refresh not due
    slot.put(_frame("cam", 3, motion=True))
    assert [f.seq for f in loop.collect()] == [3]  # motion always runs
    assert loop.stats.skipped_still == 1
    loop.refresh_s = 0.0
    slot.put(_frame("cam", 4, motion=False))
    assert [f.seq for f in loop.collect()] == [4]


def test_a_failing_model_is_counted_and_the_loop_goes_on() -> None:
    class Broken(CountingDetector):
        def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
            raise RuntimeError("onnxruntime exploded")

    loop = DetectorLoop({}, [Broken()], lambda f, d: None)
    assert [len(d) for d in loop.process_batch([_frame("cam", 1, True)])] == [0]
    assert loop.stats.errors == 1


def test_a_refresh_is_put_off_while_the_picture_is_unchanged() -> None:
    rng = np.random.default_rng(0)
    street = rng.integers(60, 200, (240, 320, 3)).astype(np.uint8)
    now = [0.0]
    slot = FrameSlot()
    loop = DetectorLoop(
        {"cam": slot}, [CountingDetector()], lambda f, d: None, refresh_s=10, refresh_max_s=60,
        clock=lambda: now[0],
    )  # fmt: skip

    def still(seq: int, image: np.ndarray) -> list[int]:
        noise = rng.normal(0, 3, image.shape)  # sensor noise: averaged out in the thumbnail
        noisy = np.clip(image + noise, 0, 255).astype(np.uint8)
        slot.put(Frame("cam", noisy, time_s=seq, captured_at=0.0, connection=1, seq=seq, motion=False))
        return [f.seq for f in loop.collect()]

    assert still(0, street) == [0]
    ran = [t for t in range(5, 60, 5) if (now.__setitem__(0, float(t)), still(t, street))[1]]
    assert ran == [], "an unchanged picture was refreshed before refresh_max_s"
    assert loop.stats.skipped_unchanged == 10  # 10..55 s; 5 s was not due at all
    now[0] = 60.0
    assert still(60, street) == [60]  # refresh_max_s reached

    parked = street.copy()
    parked[100:130, 200:250] = 20  # a dark car, 2 % of the picture, that arrived too slowly to be motion
    now[0] = 65.0
    assert still(65, parked) == []  # not due: 5 s since the last run
    now[0] = 70.0
    assert still(70, parked) == [70]  # due and changed: refreshed at once
    now[0] = 80.0
    assert still(80, parked) == []  # the car is the new normal


class ThreadRecordingDetector(CountingDetector):
    """Like CountingDetector, and notes which thread ran each call (and waits, so calls overlap)."""

    def __init__(self, thread_safe: bool = True) -> None:
        super().__init__()
        self.thread_safe = thread_safe
        self.threads: list[str] = []
        self.overlap = threading.Barrier(2, timeout=5) if thread_safe else None

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        self.threads.append(threading.current_thread().name)
        if self.overlap is not None:
            self.overlap.wait()  # both chunks must be in flight at once, or this times out
        return super().detect_batch(frames)


def test_workers_run_the_halves_of_a_batch_at_once_and_keep_the_order() -> None:
    slots = {f"cam{i}": FrameSlot() for i in range(4)}
    pooled, local = ThreadRecordingDetector(), ThreadRecordingDetector(thread_safe=False)
    got: list[tuple[str, int]] = []
    loop = DetectorLoop(
        slots, [pooled, local], lambda f, d: got.append((f.camera_id, len(d))), max_batch=4, workers=2
    )
    frames = [_frame(f"cam{i}", 1, motion=True, value=i % 2) for i in range(4)]  # odd cameras hold a person
    results = loop.process_batch(frames)
    assert pooled.batches == [2, 2] and all(t.startswith("inference") for t in pooled.threads)
    assert local.batches == [4] and local.threads == [threading.current_thread().name]
    assert [len(r) for r in results] == [0, 2, 0, 2]  # one person from each model, in the frames' order
    assert got == [("cam0", 0), ("cam1", 2), ("cam2", 0), ("cam3", 2)]
