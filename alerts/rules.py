"""Alert rules: which detections raise an alert, with a cooldown per camera and label."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from detect.detections import Detections


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    labels: frozenset[str]
    min_score: float
    cooldown_s: float
    cameras: frozenset[str] | None = None  # None: every camera

    def applies_to(self, camera_id: str) -> bool:
        return self.cameras is None or camera_id in self.cameras


@dataclass(frozen=True, slots=True)
class Trigger:
    """One detection that a rule turned into an alert."""

    rule: str
    camera_id: str
    label: str
    score: float
    bbox: tuple[float, float, float, float]
    index: int  # which detection of the frame


class RuleEngine:
    """Evaluates detections of a frame against the rules; thread-safe.

    The best-scoring qualifying detection per (rule, label) becomes a trigger, unless that camera and label
    raised an alert less than `cooldown_s` ago (clock: the caller's `now`, wall seconds).
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def evaluate(self, camera_id: str, detections: Detections, now: float) -> list[Trigger]:
        triggers: list[Trigger] = []
        if len(detections) == 0:
            return triggers
        labels = np.array(detections.labels, dtype=object)
        with self._lock:
            for rule in self.rules:
                if not rule.applies_to(camera_id):
                    continue
                for label in sorted(rule.labels):
                    mask = (labels == label) & (detections.confidence >= rule.min_score)
                    if not mask.any():
                        continue
                    key = (camera_id, label)
                    last = self._last.get(key)
                    if last is not None and now - last < rule.cooldown_s:
                        continue
                    index = int(np.flatnonzero(mask)[np.argmax(detections.confidence[mask])])
                    box = detections.xyxy[index]
                    self._last[key] = now
                    triggers.append(
                        Trigger(
                            rule=rule.name,
                            camera_id=camera_id,
                            label=label,
                            score=float(detections.confidence[index]),
                            bbox=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                            index=index,
                        )
                    )
        return triggers
