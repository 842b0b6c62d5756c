from __future__ import annotations

import numpy as np

from alerts.rules import Rule, RuleEngine
from detect.detections import Detections

NAMES = ("person", "car", "fire")


def _dets(*items: tuple[str, float]) -> Detections:
    return Detections(
        xyxy=np.array([[10 * i, 10, 10 * i + 5, 20] for i in range(len(items))], np.float32).reshape(-1, 4),
        confidence=np.array([s for _, s in items], np.float32),
        class_id=np.array([NAMES.index(label) for label, _ in items], np.int32),
        names=NAMES,
    )


def test_best_detection_above_threshold_triggers_once_per_cooldown() -> None:
    engine = RuleEngine([Rule("people", frozenset({"person"}), 0.5, cooldown_s=30)])
    first = engine.evaluate("cam1", _dets(("person", 0.6), ("person", 0.9), ("car", 0.99)), now=100.0)
    assert [(t.label, round(t.score, 2), t.index) for t in first] == [("person", 0.9, 1)]
    assert engine.evaluate("cam1", _dets(("person", 0.95)), now=120.0) == []
    assert len(engine.evaluate("cam2", _dets(("person", 0.95)), now=120.0)) == 1  # cooldown is per camera
    assert len(engine.evaluate("cam1", _dets(("person", 0.95)), now=130.5)) == 1


def test_scores_below_threshold_and_other_cameras_do_not_trigger() -> None:
    engine = RuleEngine([Rule("fire", frozenset({"fire"}), 0.4, 10, cameras=frozenset({"barn"}))])
    assert engine.evaluate("barn", _dets(("fire", 0.39)), now=0) == []
    assert engine.evaluate("gate", _dets(("fire", 0.9)), now=0) == []
    assert [t.label for t in engine.evaluate("barn", _dets(("fire", 0.41)), now=0)] == ["fire"]


def test_empty_detections() -> None:
    engine = RuleEngine([Rule("people", frozenset({"person"}), 0.5, 30)])
    assert engine.evaluate("cam", Detections.empty(NAMES), now=0) == []
