"""Motion regions, region crops and the detector loop that uses them (batch timeout, whole-frame refresh)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.crops import CropPolicy, plan_crops
from detect.detections import Detections
from detect.loop import DetectorLoop
from detect.motion import MotionGate
from detect.nanodet import NanoDetDetector
from detect.tracker import Tracker
from ingest.frames import Frame, FrameSlot

RNG = np.random.default_rng(0)


def _noisy(height: int, width: int, value: int = 100) -> np.ndarray:
    base = np.full((height, width, 3), value, np.float32)
    return np.clip(base + RNG.normal(0, 2, base.shape), 0, 255).astype(np.uint8)


def _with_square(image: np.ndarray, x: int, y: int, side: int, value: int = 240) -> np.ndarray:
    out = image.copy()
    out[y : y + side, x : x + side] = value
    return out


def test_motion_regions_say_where_it_moved() -> None:
    gate = MotionGate()
    assert gate.detect(_noisy(480, 640)).moving is False  # the first frame is the background
    assert gate.detect(_noisy(480, 640)).moving is False  # sensor noise is not motion
    one = gate.detect(_with_square(_noisy(480, 640), 400, 300, 40))
    assert one.moving and len(one.regions) == 1
    x0, y0, x1, y1 = one.regions[0]
    assert x0 <= 400 / 640 <= 440 / 640 <= x1 and y0 <= 300 / 480 <= 340 / 480 <= y1
    assert (x1 - x0) < 0.15 and (y1 - y0) < 0.2  # tight around the square, not the whole frame
    two = MotionGate()
    two.detect(_noisy(480, 640))
    far_apart = _with_square(_with_square(_noisy(480, 640), 40, 40, 40), 520, 380, 40)
    assert len(two.detect(far_apart).regions) == 2


def test_motion_under_a_mask_does_not_count() -> None:
    gate = MotionGate(mask=[[(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)]])  # the lower right quarter
    gate.detect(_noisy(480, 640))
    assert gate.detect(_with_square(_noisy(480, 640), 400, 300, 60)).moving is False
    assert gate.detect(_with_square(_noisy(480, 640), 60, 60, 60)).moving is True


def test_crops_only_where_they_enlarge_objects() -> None:
    policy = CropPolicy()
    small = (0.70, 0.65, 0.74, 0.75)  # a far person on a 1920x1080 camera
    (crop,) = plan_crops([small], 1920, 1080, 416, policy) or [None]
    assert crop is not None and crop[2] - crop[0] == crop[3] - crop[1] == 416
    assert (
        crop[0] <= 0.70 * 1920
        and crop[2] >= 0.74 * 1920
        and crop[1] <= 0.65 * 1080
        and crop[3] >= 0.75 * 1080
    )
    assert plan_crops([small], 768, 576, 640, policy) is None  # a 640 model sees a 768 frame nearly whole
    assert plan_crops([(0.1, 0.1, 0.9, 0.9)], 1920, 1080, 416, policy) is None  # big motion: whole frame
    assert plan_crops([], 1920, 1080, 416, policy) is None
    spread = [(0.05, 0.1, 0.08, 0.2), (0.5, 0.5, 0.53, 0.6), (0.9, 0.8, 0.93, 0.9)]
    assert plan_crops(spread, 1920, 1080, 416, policy) is None  # 3 regions > max_crops, union too big
    two = plan_crops(spread[:2], 1920, 1080, 416, policy)
    assert two is not None and len(two) == 2
    inside = plan_crops([(0.97, 0.95, 0.999, 0.999)], 1920, 1080, 416, policy)
    assert inside is not None and inside[0][2] <= 1920 and inside[0][3] <= 1080  # shifted into the frame


class BlobDetector:
    """A stand-in model with a 100 px input: finds the bright square, records the shapes it was given."""

    names = ("person",)
    input_size = 100

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.batches: list[int] = []

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        self.batches.append(len(frames))
        out = []
        for image in frames:
            self.shapes.append(image.shape)
            ys, xs = np.nonzero(image[:, :, 0] > 200)
            boxes = np.array(
                [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] if len(xs) else [], np.float32
            )
            n = len(boxes)
            out.append(
                Detections(
                    boxes.reshape(-1, 4), np.full(n, 0.9, np.float32), np.zeros(n, np.int32), self.names
                )
            )
        return out


def _frame(camera: str, image: np.ndarray, t: float, regions: tuple = (), seq: int = 1) -> Frame:
    return Frame(
        camera, image, time_s=t, captured_at=time.time(), connection=1, seq=seq, motion=True, regions=regions
    )


def test_loop_runs_crops_maps_boxes_back_and_refreshes_whole_frames() -> None:
    clock = [0.0]
    detector = BlobDetector()
    loop = DetectorLoop(
        {}, [detector], lambda f, d: None, crops=CropPolicy(), refresh_s=5, clock=lambda: clock[0]
    )
    image = _with_square(_noisy(1000, 1000), 700, 300, 20)
    region = (0.69, 0.29, 0.73, 0.33)
    first = loop.process(_frame("cam", image, 0.0, (region,)))  # no whole frame yet: run whole
    assert detector.shapes[-1] == (1000, 1000, 3) and first.coverage == ()
    clock[0] = 1.0
    cropped = loop.process(_frame("cam", image, 1.0, (region,)))
    assert detector.shapes[-1] == (100, 100, 3)  # the crop, at the model's input size
    assert cropped.xyxy.tolist() == [[700, 300, 720, 320]]  # back in frame pixels
    assert len(cropped.coverage) == 1 and loop.stats.crop_inputs == 1
    clock[0] = 5.5
    loop.process(_frame("cam", image, 5.5, (region,)))
    assert detector.shapes[-1] == (1000, 1000, 3)  # whole-frame refresh due
    loop.process(_frame("cam", image, 6.0))  # motion without regions: whole frame
    assert detector.shapes[-1] == (1000, 1000, 3)


def test_tracks_outside_the_crops_are_not_aged() -> None:
    tracker = Tracker(max_age_s=1.0)
    whole = Detections(
        np.array([[10, 10, 50, 50]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int32), ("car",)
    )
    (parked,) = tracker.update(whole, now=0.0)
    empty_crop = Detections(
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int32),
        ("car",),
        coverage=((500, 500, 600, 600),),
    )
    assert [t.id for t in tracker.update(empty_crop, now=5.0)] == [parked.id]  # not looked at: kept
    nothing = Detections.empty(("car",))
    assert tracker.update(nothing, now=6.0) == [] and [t.id for t in tracker.ended] == [parked.id]


def test_batch_timeout_waits_for_other_cameras() -> None:
    for timeout, expected in ((0.8, [2]), (0.0, [1, 1])):
        slots = {"a": FrameSlot(), "b": FrameSlot()}
        detector = BlobDetector()
        done = threading.Event()
        seen: list[str] = []

        def result(
            frame: Frame, _d: Detections, seen: list[str] = seen, done: threading.Event = done
        ) -> None:
            seen.append(frame.camera_id)
            if len(seen) == 2:
                done.set()

        loop = DetectorLoop(slots, [detector], result, max_batch=2, batch_timeout_s=timeout)
        loop.start()
        try:
            time.sleep(0.1)
            slots["a"].put(_frame("a", _noisy(50, 50), 0.0))
            time.sleep(0.2)
            slots["b"].put(_frame("b", _noisy(50, 50), 0.0))
            assert done.wait(5)
        finally:
            loop.stop()
            loop.join(5)
        assert detector.batches == expected, f"batch timeout {timeout}"
        assert loop.stats.latencies_s and max(loop.stats.latencies_s) < 5


@pytest.fixture(scope="module")
def nanodet(models_dir: Path) -> NanoDetDetector:
    return NanoDetDetector(models_dir / "nanodet-m-416.onnx")


def test_crops_find_far_people_the_whole_frame_misses(nanodet: NanoDetDetector, bus_bgr: np.ndarray) -> None:
    """bus.jpg shrunk to 130 px high on a 1920x1080 camera: people about 50 px tall."""
    small = cv2.resize(bus_bgr, None, fx=0.12, fy=0.12, interpolation=cv2.INTER_AREA)
    canvas = _noisy(1080, 1920, 120)
    y, x = 700, 1300
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    region = (x / 1920, y / 1080, (x + small.shape[1]) / 1920, (y + small.shape[0]) / 1080)
    whole = DetectorLoop({}, [nanodet], lambda f, d: None).process(_frame("cam", canvas, 0.0, (region,)))
    clock = [0.0]
    loop = DetectorLoop({}, [nanodet], lambda f, d: None, crops=CropPolicy(), clock=lambda: clock[0])
    loop.process(_frame("cam", canvas, 0.0, (region,)))  # the first run of a camera is whole
    clock[0] = 0.5
    cropped = loop.process(_frame("cam", canvas, 0.5, (region,)))
    assert whole.labels.count("person") == 0
    assert cropped.labels.count("person") >= 3
    people = cropped.xyxy[np.array(cropped.labels) == "person"]
    assert (people[:, 0] >= x - 2).all() and (people[:, 2] <= x + small.shape[1] + 2).all()  # frame pixels


def test_a_track_has_moved_once_it_travelled_from_where_it_was_first_seen() -> None:
    tracker = Tracker()

    def car(x: float, w: float = 100) -> Detections:
        box = np.array([[x, 100, x + w, 160]], np.float32)
        return Detections(box, np.array([0.9], np.float32), np.zeros(1, np.int32), ("car",))

    assert [t.moved for t in tracker.update(car(100), 0.0)] == [False]  # parked when the camera started
    assert [t.moved for t in tracker.update(car(108, 92), 1.0)] == [False]  # a person passes in front of it
    assert [t.moved for t in tracker.update(car(150), 2.0)] == [True]  # it drives off
    assert [t.moved for t in tracker.update(car(150), 3.0)] == [True]  # and stays a mover
    growing = Tracker()
    growing.update(car(100), 0.0)
    assert [t.moved for t in growing.update(car(80, 160), 0.5)] == [True]  # coming towards the camera


def _person_at(x: float) -> Detections:
    return Detections(
        np.array([[x, 100, x + 40, 200]], np.float32),
        np.array([0.9], np.float32),
        np.zeros(1, np.int32),
        ("car",),
    )


def test_a_walker_keeps_its_id_when_its_boxes_no_longer_overlap() -> None:
    """At 2 detector runs a second a person moves more than their own width between runs."""
    tracker = Tracker()
    ids = {t.id for step in range(8) for t in tracker.update(_person_at(50.0 * step), now=0.5 * step)}
    assert len(ids) == 1
    assert len({t.id for t in Tracker(max_jump=1e-9).update(_person_at(0), 0.0)}) == 1
    far = Tracker()
    far.update(_person_at(0.0), 0.0)
    assert len(far.update(_person_at(300.0), 0.5)) == 2  # too far to be the same object: a new track


def test_people_in_the_street_keep_their_tracks(media: dict[str, Path], nanodet: NanoDetDetector) -> None:
    """vtest at 2 detector runs a second: IoU matching alone made 124 person tracks of 80 s (about 35 people
    cross); prediction and the nearness fallback make 34."""
    import av

    tracker = Tracker()
    ids: set[int] = set()
    with av.open(str(media["people"])) as clip:
        for i, frame in enumerate(clip.decode(video=0)):
            if i % 5:
                continue
            found = nanodet.detect(frame.to_ndarray(format="bgr24"))
            ids |= {t.id for t in tracker.update(found, now=i / 10) if t.label == "person" and t.hits >= 2}
    assert 20 <= len(ids) <= 50


def test_growth_is_area_over_the_first_area() -> None:
    tracker = Tracker()
    tracker.update(_person_at(0.0), 0.0)
    grown = Detections(
        np.array([[0, 50, 60, 200]], np.float32), np.array([0.9], np.float32), np.zeros(1, np.int32), ("car",)
    )
    [track] = tracker.update(grown, 0.5)
    assert track.growth == pytest.approx(60 * 150 / (40 * 100))


def test_no_ghost_motion_after_someone_walks_off() -> None:
    """A person standing a while blends into the background; once they leave, the empty street differs from
    that background but not from the previous frame: not motion."""
    gate = MotionGate()
    gate.detect(_noisy(480, 640))
    for _ in range(10):  # someone stands there for 5 s at 2 samples a second
        assert gate.detect(_with_square(_noisy(480, 640), 300, 200, 60)).moving in (True, False)
    assert gate.detect(_noisy(480, 640)).moving is True  # they walk off: the frame changed
    assert [gate.detect(_noisy(480, 640)).moving for _ in range(5)] == [False] * 5  # no ghost afterwards


def test_a_still_camera_keeps_running_while_it_follows_someone() -> None:
    clock = [0.0]
    following = {"cam": False}
    slot = FrameSlot()
    loop = DetectorLoop(
        {"cam": slot}, [BlobDetector()], lambda f, d: None, refresh_s=60, clock=lambda: clock[0],
        follow=lambda camera: following[camera],
    )  # fmt: skip
    still = _noisy(50, 50)

    def run(t: float) -> int:
        clock[0] = t
        slot.put(Frame("cam", still, t, t, 1, int(t * 2), motion=False))
        return len(loop.collect())

    assert run(0.0) == 1 and run(0.5) == 0  # a still camera: first frame, then refresh only
    following["cam"] = True  # a person who walked in has stopped to loiter
    assert run(1.0) == 1 and run(1.5) == 1
    following["cam"] = False
    assert run(2.0) == 0
