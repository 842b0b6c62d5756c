"""A camera follows a mover that stopped while the detector sees it, and stops following once it is gone."""

from __future__ import annotations

import numpy as np

from alerts.evaluator import FrameEvaluator
from alerts.rules import Rule, RuleEngine
from detect.detections import Detections
from ingest.frames import Frame

NAMES = ("person",)


def _step(evaluator: FrameEvaluator, t: float, box: tuple[float, ...] | None) -> bool:
    image = np.zeros((480, 640, 3), np.uint8)
    boxes = np.array([box] if box else [], np.float32).reshape(-1, 4)
    detections = Detections(
        boxes, np.full(len(boxes), 0.9, np.float32), np.zeros(len(boxes), np.int32), NAMES
    )
    evaluator.evaluate(Frame("cam", image, t, 1000.0 + t, 1, int(t * 2), False), detections)
    return evaluator.following("cam")


def test_following_lasts_while_the_mover_is_seen_and_ends_soon_after_it_leaves() -> None:
    evaluator = FrameEvaluator(
        RuleEngine([Rule("people", frozenset({"person"}), min_score=0.5, cooldown_s=30)])
    )
    t = 0.0
    for x in range(0, 400, 40):  # walks 360 px across a 640 px frame in 5 s
        _step(evaluator, t, (x, 200, x + 40, 300))
        t += 0.5
    assert evaluator.following("cam")
    for _ in range(8):  # stops and stands (loitering): still followed
        assert _step(evaluator, t, (360, 200, 400, 300))
        t += 0.5
    following = []
    for _ in range(6):  # gone: the track lives on for the tracker's max age, but is no longer followed
        following.append(_step(evaluator, t, None))
        t += 0.5
    assert following[:3] == [True, True, True] and following[3:] == [False, False, False], following
    assert evaluator.tracks, "the track itself has not ended yet"
