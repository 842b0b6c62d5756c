"""From one frame's detections to the alerts it raises: masks, tracking, the flicker cue, the rules."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from alerts.rules import RuleEngine, Trigger
from detect.detections import Detections
from detect.flicker import FlickerMeter
from detect.tracker import Track, Tracker
from detect.zones import Zone
from ingest.frames import Frame


class FrameEvaluator:
    """Per-camera state (a tracker and a flicker meter each); call it from one thread, the detector's."""

    def __init__(
        self,
        rules: RuleEngine,
        zones: Mapping[str, Mapping[str, Zone]] | None = None,
        masks: Mapping[str, list[Zone]] | None = None,
        follow_grace_s: float = 1.5,
        inside_fire_cover: float = 0.8,
    ) -> None:
        self.rules = rules
        self.follow_grace_s = follow_grace_s
        self.inside_fire_cover = inside_fire_cover
        self.zones = zones or {}
        self.masks = masks or {}
        # Any detection that some rule would accept may start a track; weaker ones only extend tracks.
        self._start_score = min((r.min_score for r in rules.rules), default=0.5)
        self._rules_seen = rules.rules
        self._trackers: dict[str, Tracker] = {}
        self._flicker: dict[str, FlickerMeter] = {}
        self.tracks: list[Track] = []  # the live tracks after the last `evaluate`
        self._following: dict[str, bool] = {}
        self.ended: list[Track] = []  # tracks that ended in the last `evaluate`
        self._tracks: dict[str, list[Track]] = {}

    def evaluate(self, frame: Frame, detections: Detections) -> tuple[Detections, list[Trigger]]:
        """The detections that count (outside masks) and the triggers they raise."""
        height, width = frame.image.shape[:2]
        detections = self._unmasked(frame.camera_id, detections, width, height)
        detections = self._without_people_in_flames(frame.camera_id, detections)
        if self.rules.rules is not self._rules_seen:  # edited through the API: the bar may have moved
            self._rules_seen = self.rules.rules
            self._start_score = min((r.min_score for r in self.rules.rules), default=0.5)
            for existing in self._trackers.values():
                existing.high_score = self._start_score
        tracker = self._trackers.get(frame.camera_id)
        if tracker is None:
            tracker = self._trackers[frame.camera_id] = Tracker(high_score=self._start_score)
        tracks = tracker.update(detections, now=frame.captured_at)
        self.tracks, self.ended = tracks, tracker.ended
        self._tracks[frame.camera_id] = tracks
        # Follow a mover that stopped while the detector still sees it; one that has not been seen for
        # `follow_grace_s` has most likely left (its track lives on for the tracker's max age, unfollowed).
        self._following[frame.camera_id] = any(
            t.moved and not t.stationary and frame.captured_at - t.last_seen <= self.follow_grace_s
            for t in tracks
        )
        meter = self._flicker.setdefault(frame.camera_id, FlickerMeter())
        seen = {t.id: t.box for t in tracks if t.last_seen == frame.captured_at}
        flicker = meter.update(frame.image, seen, live={t.id for t in tracks})
        triggers = self.rules.evaluate(
            frame.camera_id,
            tracks,
            (width, height),
            now=frame.captured_at,
            zones=self.zones.get(frame.camera_id),
            flicker=flicker,
        )
        return detections, triggers

    def following(self, camera_id: str) -> bool:
        """Whether the camera has an object in view that moved, has not settled, and was seen in the last
        `follow_grace_s` (a person who stopped to loiter): its frames are worth running even when the motion
        gate sees nothing."""
        return self._following.get(camera_id, False)

    def _without_people_in_flames(self, camera_id: str, detections: Detections) -> Detections:
        """Drop "person" boxes lying (by `inside_fire_cover` of their area) inside a fire box of this frame or
        a live fire track: the object detector now and then calls a tall flame a person (NanoDet 0.56 on the
        bench flames). A real person at a fire stands mostly outside the flames' box, and the fire alerts."""
        if not self.inside_fire_cover or len(detections) == 0:
            return detections
        labels = detections.labels
        people = [i for i, label in enumerate(labels) if label == "person"]
        if not people:
            return detections
        fires = [detections.xyxy[i] for i, label in enumerate(labels) if label == "fire"]
        fires += [np.asarray(t.box) for t in self.tracks_of(camera_id) if t.label == "fire"]
        if not fires:
            return detections
        keep = np.ones(len(detections), dtype=bool)
        for i in people:
            if any(_covered(detections.xyxy[i], fire) >= self.inside_fire_cover for fire in fires):
                keep[i] = False
        return detections.filter(keep)

    def tracks_of(self, camera_id: str) -> list[Track]:
        """The camera's live tracks after its last frame."""
        return self._tracks.get(camera_id, [])

    def _unmasked(self, camera_id: str, detections: Detections, width: int, height: int) -> Detections:
        """Drop detections standing in a mask (a flag that waves, a road outside the village)."""
        masks = self.masks.get(camera_id)
        if not masks or len(detections) == 0:
            return detections
        keep = [not any(m.contains_box(box, width, height) for m in masks) for box in detections.xyxy]
        return detections.filter(np.array(keep, dtype=bool))


def _covered(box: np.ndarray, by: np.ndarray) -> float:
    """The fraction of `box`'s area that lies inside `by`."""
    x0, y0 = max(box[0], by[0]), max(box[1], by[1])
    x1, y1 = min(box[2], by[2]), min(box[3], by[3])
    area = float((box[2] - box[0]) * (box[3] - box[1]))
    if area <= 0 or x1 <= x0 or y1 <= y0:
        return 0.0
    return float((x1 - x0) * (y1 - y0)) / area
