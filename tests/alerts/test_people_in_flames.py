"""A "person" box inside a fire box is the object detector misreading a flame, not a person at the fire."""

from __future__ import annotations

import numpy as np

from alerts.evaluator import FrameEvaluator
from alerts.rules import Rule, RuleEngine
from detect.detections import Detections
from ingest.frames import Frame

NAMES = ("person", "fire")
# The boxes of the bench flames clip at 23.8 s: NanoDet's "person" 0.44 lies 90 % inside the fire box.
FIRE = (422, 308, 646, 555)
FLAME_PERSON = (418, 276, 645, 549)
WALKER = (100, 200, 160, 380)  # a person beside the fire, outside its box
RULES = [
    Rule("people", frozenset({"person"}), min_score=0.4, cooldown_s=0, min_hits=1, moving_only=False),
    Rule("fire", frozenset({"fire"}), min_score=0.4, cooldown_s=0, min_hits=1),
]


def _frame(t: float) -> Frame:
    return Frame("cam", np.zeros((576, 768, 3), np.uint8), t, 1000.0 + t, 1, int(t * 2), False)


def _detections(*items: tuple[str, tuple[int, int, int, int], float]) -> Detections:
    boxes = np.array([box for _, box, _ in items], np.float32).reshape(-1, 4)
    scores = np.array([score for _, _, score in items], np.float32)
    ids = np.array([NAMES.index(label) for label, _, _ in items], np.int32)
    return Detections(boxes, scores, ids, NAMES)


def test_a_person_inside_a_fire_box_of_the_same_frame_is_dropped() -> None:
    evaluator = FrameEvaluator(RuleEngine(RULES))
    kept, _ = evaluator.evaluate(
        _frame(0.0),
        _detections(("fire", FIRE, 0.83), ("person", FLAME_PERSON, 0.56), ("person", WALKER, 0.8)),
    )
    assert sorted(zip(kept.labels, kept.xyxy[:, 0].tolist(), strict=True)) == [
        ("fire", 422.0),
        ("person", 100.0),
    ]


def test_a_person_inside_a_live_fire_track_is_dropped_when_the_fire_is_missed_in_that_frame() -> None:
    evaluator = FrameEvaluator(RuleEngine(RULES))
    evaluator.evaluate(_frame(0.0), _detections(("fire", FIRE, 0.83)))
    kept, triggers = evaluator.evaluate(_frame(0.5), _detections(("person", FLAME_PERSON, 0.56)))
    assert len(kept) == 0 and not [t for t in triggers if t.label == "person"]


def test_without_fire_the_same_person_box_counts() -> None:
    evaluator = FrameEvaluator(RuleEngine(RULES))
    kept, _ = evaluator.evaluate(_frame(0.0), _detections(("person", FLAME_PERSON, 0.56)))
    assert kept.labels == ["person"]


def test_the_suppression_can_be_turned_off() -> None:
    evaluator = FrameEvaluator(RuleEngine(RULES), inside_fire_cover=0.0)
    kept, _ = evaluator.evaluate(
        _frame(0.0), _detections(("fire", FIRE, 0.83), ("person", FLAME_PERSON, 0.56))
    )
    assert sorted(kept.labels) == ["fire", "person"]


def test_rules_edited_to_a_lower_score_lower_the_bar_for_starting_tracks() -> None:
    engine = RuleEngine([Rule("people", frozenset({"person"}), min_score=0.7, cooldown_s=0, min_hits=1)])
    evaluator = FrameEvaluator(engine)
    evaluator.evaluate(_frame(0.0), _detections(("person", WALKER, 0.55)))
    assert evaluator.tracks_of("cam") == []  # 0.55 starts no track under a 0.7 bar
    engine.replace_rules([Rule("people", frozenset({"person"}), min_score=0.5, cooldown_s=0, min_hits=1)])
    evaluator.evaluate(_frame(0.5), _detections(("person", WALKER, 0.55)))
    assert [t.label for t in evaluator.tracks_of("cam")] == ["person"]
