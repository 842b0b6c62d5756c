"""Measured capacity: the calibrated worst case first, then the detector's load per camera held, the peak of
recent windows deciding; down at once, up by a quarter per window, within 1 and the configured maximum."""

from __future__ import annotations

import numpy as np
import pytest

from detect.detections import Detections
from detect.loop import DetectorLoop
from gridwatch.cluster.capacity import CapacityMeter, CapacityTracker


class _Feed:
    """A detector loop as the meter sees it: the clock, the loop's busy seconds, the cameras held."""

    def __init__(self, meter: CapacityMeter, cameras: int) -> None:
        self.meter, self.now, self.busy = meter, 0.0, 0.0
        meter.sample(self.now, self.busy, cameras)

    def windows(self, loads_and_cameras: list[tuple[float, int]]) -> None:
        """One window per (load, cameras held), sampled every second."""
        for load, cameras in loads_and_cameras:
            for _ in range(int(self.meter.window_s)):
                self.now += 1.0
                self.busy += load
                self.meter.sample(self.now, self.busy, cameras)


def test_the_calibrated_worst_case_sets_the_first_capacity() -> None:
    cost = CapacityMeter.calibrated(seconds_per_frame=0.030, frames_per_s=2.0)  # 6 % of the detector each
    assert cost == pytest.approx(0.06)
    assert CapacityMeter(64, target_load=0.75, calibrated_cost=cost).capacity == 12  # 0.75 / 0.06 = 12.5
    assert CapacityMeter(10, target_load=0.75, calibrated_cost=cost).capacity == 10  # never above the maximum
    assert CapacityMeter(64, target_load=0.01, calibrated_cost=cost).capacity == 1  # never below 1
    assert CapacityMeter(64).capacity == 64  # nothing measured yet: the configured number
    # something moves 25 % of the time at 2 frames/s; a refresh every 10 s otherwise
    typical = CapacityMeter.calibrated(0.160, 2.0, activity=0.25, refresh_s=10.0)
    assert typical == pytest.approx(0.160 * (0.5 + 0.075))
    assert CapacityMeter(64, target_load=0.75, calibrated_cost=typical).capacity == 8
    with pytest.raises(ValueError):
        CapacityMeter.calibrated(0.1, 2.0, activity=1.5)


def test_a_heavier_load_lowers_the_capacity_at_once() -> None:
    meter = CapacityMeter(64, target_load=0.75, window_s=10, calibrated_cost=0.05)  # 15 cameras
    assert meter.capacity == 15
    _Feed(meter, 10).windows([(0.90, 10)])  # 10 cameras took 90 %: 9 % each
    assert meter.latest is not None
    assert meter.latest.load == pytest.approx(0.90) and meter.latest.cameras == pytest.approx(10)
    assert meter.latest.cost == pytest.approx(0.09)
    assert meter.capacity == 8  # 0.75 / 0.09 = 8.3


def test_a_lighter_load_raises_it_slowly_and_only_once_the_worst_case_aged_out() -> None:
    meter = CapacityMeter(64, target_load=0.75, window_s=10, memory=3, calibrated_cost=0.05, trust_after=3)
    assert meter.capacity == 15
    # the motion gate skips most frames: 10 cameras take 10 %; the calibration is still in memory
    feed = _Feed(meter, 10)
    feed.windows([(0.10, 10), (0.10, 10)])
    assert meter.capacity == 15
    # three windows measured: the calibration no longer counts; 1 % per camera would allow 75, but the rise
    # is a quarter per window
    feed.windows([(0.10, 10)])
    assert meter.capacity == 18  # 15 + 3
    feed.windows([(0.10, 10)] * 4)
    assert meter.capacity == 18 + 4 + 5 + 6 + 8  # 22, 27, 33, 41: a quarter of each (at least 1)
    # one busy window brings it down again at once
    feed.windows([(0.60, 10)])
    assert meter.capacity == 12  # 6 % per camera


def test_a_window_with_no_camera_held_teaches_nothing() -> None:
    meter = CapacityMeter(64, window_s=10, calibrated_cost=0.05)
    _Feed(meter, 0).windows([(0.0, 0), (0.0, 0)])
    assert meter.latest is None and meter.capacity == 15 and not meter.costs and meter.windows == 0


def test_the_mean_cameras_held_counts_a_camera_taken_mid_window() -> None:
    meter = CapacityMeter(64, window_s=10)
    meter.sample(0.0, 0.0, 0)
    for second in range(1, 11):
        meter.sample(float(second), 0.05 * second, 0 if second <= 5 else 4)
    assert meter.latest is not None
    # 4 cameras from the sample at 6 s on: 4 of the window's 10 s
    assert meter.latest.cameras == pytest.approx(4 * 4 / 10)
    assert meter.latest.cost == pytest.approx(0.05 / 1.6)


def test_the_tracker_hands_changes_to_the_keeper() -> None:
    clock = [0.0]
    busy = [0.0]
    published: list[int] = []
    meter = CapacityMeter(64, target_load=0.75, window_s=10, calibrated_cost=0.05)
    tracker = CapacityTracker(meter, lambda: busy[0], lambda: 10, published.append, clock=lambda: clock[0])
    tracker.set_capacity(meter.capacity)  # as start() does, without the thread
    tracker.step()
    for _ in range(10):
        clock[0] += 1
        busy[0] += 0.9
        tracker.step()
    assert published == [15, 8]


@pytest.mark.parametrize("bad", [{"maximum": 0}, {"target_load": 0}, {"target_load": 1.5}, {"window_s": 0}])
def test_bad_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CapacityMeter(**({"maximum": 4} | bad))  # type: ignore[arg-type]


class _Timed:
    """A detector whose batches take a known time per image."""

    names = ("person",)

    def __init__(self) -> None:
        self.images = 0

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        import time

        time.sleep(0.004 * len(frames))
        self.images += len(frames)
        return [Detections.empty(self.names) for _ in frames]


def test_the_loop_times_a_whole_frame_without_touching_its_stats() -> None:
    detector = _Timed()
    loop = DetectorLoop({}, [detector], lambda *_: None, max_batch=4)
    seconds = loop.seconds_per_frame(np.zeros((72, 128, 3), np.uint8), repeats=3)
    assert 0.004 <= seconds < 0.02
    assert detector.images == 4 * 4  # one warm-up and three timed batches of max_batch
    assert loop.stats.frames == 0 and loop.stats.busy_s == 0 and loop.stats.model_inputs == 0


def test_cpu_spent_outside_the_detector_counts_too() -> None:
    """Decoding 10 cameras takes 1.6 of 2 cores while the detector is busy 20 % of the time: the CPU
    decides (8 % of the machine per camera: 9 cameras at 75 %)."""
    meter = CapacityMeter(64, target_load=0.75, window_s=10)
    now = busy = cpu = 0.0
    meter.sample(now, busy, 10, cpu, 2.0)
    for _ in range(10):
        now, busy, cpu = now + 1, busy + 0.2, cpu + 1.6
        meter.sample(now, busy, 10, cpu, 2.0)
    assert meter.latest is not None and meter.latest.load == pytest.approx(0.8)
    assert meter.capacity == 9


def test_the_cores_a_process_may_use() -> None:
    import os

    from gridwatch.cluster.capacity import available_cores

    assert 0 < available_cores() <= len(os.sched_getaffinity(0))


def test_the_demand_ratios_of_the_workers_sum_to_the_workers_the_cameras_need() -> None:
    """What the autoscaler sums (docker/k8s/worker.yaml): 3 full workers of 10 and 15 cameras with no room
    need 4.5 workers; with all cameras placed and room to spare, fewer than the pods running."""
    from gridwatch.worker_ops import demand_ratio

    full = [demand_ratio(10, 15, 3, 10) for _ in range(3)]
    assert sum(full) == pytest.approx(4.5)
    spare = [demand_ratio(held, 0, 3, 10) for held in (5, 4, 3)]
    assert sum(spare) == pytest.approx(1.2)
    assert demand_ratio(0, 7, 0, 0) == 7.0  # no worker counted yet, capacity 0: no division by zero
