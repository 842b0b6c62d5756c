"""A small multi-object tracker: IoU association in two passes (ByteTrack's idea), as a pure step function.

`update(detections, now)` returns the live tracks; `update(None, now)` on a frame that was not run only ages
them. When the detections came from region crops (`Detections.coverage`), tracks outside the crops were not
looked for, so they are not aged by that update. Tracks carry what the alert rules need: a stable id, first
and last time seen, and whether the object has stayed put (a parked car, a sign) so it does not alert again
and again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from detect.detections import Detections


@dataclass(frozen=True, slots=True)
class Track:
    id: int
    label: str
    box: tuple[float, float, float, float]
    score: float
    first_seen: float
    last_seen: float
    hits: int
    stationary: bool
    moved: bool = True  # it has travelled or changed size since first seen (False: scenery so far)
    growth: float = 1.0  # box area now over box area when first seen (spreading smoke and fire grow)

    @property
    def confirmed(self) -> bool:
        return self.hits >= 2


@dataclass(slots=True)
class _State:
    id: int
    label: str
    box: np.ndarray
    score: float
    first_seen: float
    last_seen: float
    hits: int = 1
    moved: bool = False
    first_box: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # centre px / s
    centres: deque[tuple[float, float, float]] = field(default_factory=deque)  # (t, x, y)

    def snapshot(self, stationary: bool) -> Track:
        x0, y0, x1, y1 = (float(v) for v in self.box)
        growth = _area(self.box) / max(_area(self.first_box), 1e-6)
        return Track(self.id, self.label, (x0, y0, x1, y1), self.score, self.first_seen, self.last_seen,
                     self.hits, stationary, self.moved, growth)  # fmt: skip


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N,4) against every box in b (M,4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


class Tracker:
    """One per camera.

    high_score: detections at or above it start tracks and are matched first; lower ones (down to whatever
    the detector kept) only extend existing tracks, which keeps a track alive through a dip in confidence.
    A track that is not matched for `max_age_s` ends. A track is stationary when its centre moved less than
    `still_fraction` of its box diagonal over the last `still_after_s` seconds.

    Detectors run at 1-2 frames a second here, where a walking person's boxes in two runs hardly overlap, so
    a track is matched where it is predicted to be (constant velocity), and when no box overlaps the
    prediction enough, to the nearest box of its label and size within `max_jump` of its diagonal.

    A track has moved once its centre or size has changed by `moved_fraction` of its diagonal since it was
    first seen: a person who walked in or a car that drove up, not a car parked there all along whose box
    wobbles as people pass in front of it.
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        high_score: float = 0.5,
        max_age_s: float = 5.0,
        still_after_s: float = 30.0,
        still_fraction: float = 0.15,
        max_jump: float = 0.6,
        moved_fraction: float = 0.3,
    ) -> None:
        self.moved_fraction = moved_fraction
        self.iou_threshold = iou_threshold
        self.max_jump = max_jump
        self.high_score = high_score
        self.max_age_s = max_age_s
        self.still_after_s = still_after_s
        self.still_fraction = still_fraction
        self._tracks: list[_State] = []
        self._next_id = 1
        self.ended: list[Track] = []  # tracks that ended in the last update

    def update(self, detections: Detections | None, now: float) -> list[Track]:
        self.ended = []
        if detections is not None and len(detections):
            labels = detections.labels
            high = np.flatnonzero(detections.confidence >= self.high_score)
            low = np.flatnonzero(detections.confidence < self.high_score)
            unmatched_high = self._associate(detections, labels, high, now)
            self._associate(detections, labels, low, now)
            for i in unmatched_high:
                self._start(detections, labels, i, now)
        coverage = detections.coverage if detections is not None else ()
        alive = []
        for track in self._tracks:
            if coverage and not _centre_in(track.box, coverage):
                alive.append(track)  # not looked for in this frame
            elif now - track.last_seen > self.max_age_s:
                self.ended.append(track.snapshot(self._is_still(track)))
            else:
                alive.append(track)
        self._tracks = alive
        return [t.snapshot(self._is_still(t)) for t in self._tracks]

    def _associate(self, dets: Detections, labels: list[str], index: np.ndarray, now: float) -> list[int]:
        """Greedy best-IoU matching of the given detections to tracks not yet updated at `now`."""
        free = [t for t in self._tracks if t.last_seen < now]
        if len(index) == 0:
            return []
        if not free:
            return [int(i) for i in index]
        ious = self._similarity(free, dets.xyxy[index], now)
        for ti, track in enumerate(free):
            for di, i in enumerate(index):
                if labels[i] != track.label:
                    ious[ti, di] = 0.0
        matched_dets: set[int] = set()
        while ious.size and ious.max() > 0:
            row, col = (int(v) for v in np.unravel_index(int(np.argmax(ious)), ious.shape))
            self._extend(free[row], dets, int(index[col]), now)
            matched_dets.add(col)
            ious[row, :] = 0.0
            ious[:, col] = 0.0
        return [int(i) for col, i in enumerate(index) if col not in matched_dets]

    def _similarity(self, tracks: list[_State], boxes: np.ndarray, now: float) -> np.ndarray:
        """IoU with each track's predicted box where it reaches `iou_threshold`; below that, a nearness score
        under the threshold (so overlaps are matched first); 0 where they cannot be the same object."""
        predicted = np.stack([t.box + np.tile(t.velocity * (now - t.last_seen), 2) for t in tracks])
        iou = iou_matrix(predicted, boxes)
        centres_t = (predicted[:, :2] + predicted[:, 2:]) / 2
        centres_d = (boxes[:, :2] + boxes[:, 2:]) / 2
        diagonal = np.hypot(predicted[:, 2] - predicted[:, 0], predicted[:, 3] - predicted[:, 1])
        jump = np.linalg.norm(centres_t[:, None, :] - centres_d[None, :, :], axis=2) / np.maximum(
            diagonal[:, None], 1e-6
        )
        area_t = (predicted[:, 2] - predicted[:, 0]) * (predicted[:, 3] - predicted[:, 1])
        area_d = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        ratio = area_d[None, :] / np.maximum(area_t[:, None], 1e-6)
        near = (jump < self.max_jump) & (ratio > 0.4) & (ratio < 2.5)
        fallback = np.where(near, self.iou_threshold * 0.99 * (1 - jump / self.max_jump), 0.0)
        return np.where(iou >= self.iou_threshold, iou, np.maximum(fallback, 0.0)).astype(np.float32)

    def _start(self, dets: Detections, labels: list[str], i: int, now: float) -> None:
        box = dets.xyxy[i].copy()
        track = _State(
            self._next_id, labels[i], box, float(dets.confidence[i]), now, now, first_box=box.copy()
        )
        self._remember_centre(track, now)
        self._next_id += 1
        self._tracks.append(track)

    def _extend(self, track: _State, dets: Detections, i: int, now: float) -> None:
        dt = now - track.last_seen
        if dt > 0:
            old = (track.box[:2] + track.box[2:]) / 2
            new = (dets.xyxy[i][:2] + dets.xyxy[i][2:]) / 2
            seen = (new - old) / dt
            track.velocity = (seen if track.hits == 1 else 0.5 * track.velocity + 0.5 * seen).astype(
                np.float32
            )
        track.box = dets.xyxy[i].copy()
        track.moved = track.moved or _travelled(track.first_box, track.box) >= self.moved_fraction
        track.score = float(dets.confidence[i])
        track.last_seen = now
        track.hits += 1
        self._remember_centre(track, now)

    def _remember_centre(self, track: _State, now: float) -> None:
        x0, y0, x1, y1 = track.box
        track.centres.append((now, float(x0 + x1) / 2, float(y0 + y1) / 2))
        while len(track.centres) > 2 and now - track.centres[1][0] >= self.still_after_s:
            track.centres.popleft()

    def _is_still(self, track: _State) -> bool:
        if track.last_seen - track.first_seen < self.still_after_s or not track.centres:
            return False
        x0, y0, x1, y1 = track.box
        diagonal = float(np.hypot(x1 - x0, y1 - y0))
        xs = [c[1] for c in track.centres]
        ys = [c[2] for c in track.centres]
        spread = float(np.hypot(max(xs) - min(xs), max(ys) - min(ys)))
        return spread < self.still_fraction * diagonal


def _centre_in(box: np.ndarray, rects: tuple[tuple[int, int, int, int], ...]) -> bool:
    cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
    return any(r[0] <= cx <= r[2] and r[1] <= cy <= r[3] for r in rects)


def _travelled(first: np.ndarray, box: np.ndarray) -> float:
    """How far a box has come from the first one: centre shift or size change, over the first diagonal."""
    diagonal = max(float(np.hypot(first[2] - first[0], first[3] - first[1])), 1e-6)
    shift = float(np.hypot(*((box[:2] + box[2:]) / 2 - (first[:2] + first[2:]) / 2)))
    size = abs(float(np.hypot(box[2] - box[0], box[3] - box[1])) - diagonal)
    return max(shift, size) / diagonal


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))
