from __future__ import annotations

import numpy as np
import pytest

from detect.detections import Detections
from detect.tracker import Tracker, iou_matrix
from detect.zones import Zone

NAMES = ("person", "car")


def _dets(*items: tuple[str, float, tuple[float, float, float, float]]) -> Detections:
    return Detections(
        np.array([box for _, _, box in items], np.float32).reshape(-1, 4),
        np.array([score for _, score, _ in items], np.float32),
        np.array([NAMES.index(label) for label, _, _ in items], np.int32),
        NAMES,
    )


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    assert iou_matrix(a, b).tolist() == [[pytest.approx(1.0), pytest.approx(1 / 3), 0.0]]


def test_a_walking_person_keeps_one_id_and_two_people_get_two() -> None:
    tracker = Tracker()
    ids = set()
    for step in range(10):
        x = 100 + 8 * step
        tracks = tracker.update(
            _dets(("person", 0.9, (x, 100, x + 40, 200)), ("person", 0.8, (400, 100, 440, 200))),
            now=step * 0.5,
        )
        ids |= {t.id for t in tracks}
    assert ids == {1, 2}
    assert all(t.hits == 10 and t.confirmed and not t.stationary for t in tracks)


def test_low_score_detections_extend_but_do_not_start_tracks() -> None:
    tracker = Tracker(high_score=0.5)
    assert [t.id for t in tracker.update(_dets(("person", 0.9, (0, 0, 50, 100))), now=0)] == [1]
    assert [t.score for t in tracker.update(_dets(("person", 0.3, (2, 0, 52, 100))), now=1)] == [
        pytest.approx(0.3)
    ]
    assert len(tracker.update(_dets(("person", 0.3, (300, 0, 350, 100))), now=2)) == 1  # no new track


def test_labels_never_match_each_other() -> None:
    tracker = Tracker()
    tracker.update(_dets(("person", 0.9, (0, 0, 50, 100))), now=0)
    tracks = tracker.update(_dets(("car", 0.9, (0, 0, 50, 100))), now=1)
    assert sorted((t.id, t.label) for t in tracks) == [(1, "person"), (2, "car")]


def test_tracks_end_after_max_age_and_skipped_frames_only_age_them() -> None:
    tracker = Tracker(max_age_s=5)
    tracker.update(_dets(("person", 0.9, (0, 0, 50, 100))), now=0)
    assert len(tracker.update(None, now=4)) == 1
    assert tracker.update(None, now=6) == []
    assert [t.id for t in tracker.ended] == [1]


def test_a_parked_car_becomes_stationary_and_a_moving_one_does_not() -> None:
    tracker = Tracker(still_after_s=30)
    for step in range(0, 70, 2):
        x = 10 + 6 * step
        car = ("car", 0.9, (500 + step % 4 * 0.5, 300, 600, 360))
        person = ("person", 0.9, (x, 100, x + 40, 200))
        tracks = {t.label: t for t in tracker.update(_dets(car, person), now=float(step))}
        if step < 30:
            assert not tracks["car"].stationary
    assert tracks["car"].stationary
    assert not tracks["person"].stationary


def test_zone_contains_the_feet_of_a_box() -> None:
    gate = Zone("gate", ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)))
    assert gate.contains_box((700, 100, 760, 500), 800, 600)  # feet at (0.91, 0.83)
    assert not gate.contains_box((100, 100, 160, 500), 800, 600)
    assert not gate.contains_box((700, 100, 760, 250), 800, 600)  # head in, feet out: (0.91, 0.42)
    assert gate.contains_point(0.5, 0.75)  # on the edge
    triangle = Zone("t", ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)))
    assert triangle.contains_point(0.2, 0.2) and not triangle.contains_point(0.8, 0.8)


def test_zone_validation() -> None:
    with pytest.raises(ValueError, match="at least 3 points"):
        Zone("z", ((0.0, 0.0), (1.0, 1.0)))
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        Zone("z", ((0.0, 0.0), (1.5, 0.0), (0.0, 1.0)))
