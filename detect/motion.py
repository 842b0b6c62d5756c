"""A cheap motion gate: downscaled grayscale frame against a running-average background.

Besides "did anything move", it says where: the changed pixels are grown a little, split into connected
blobs, and nearby blobs merged into boxes (normalised 0..1), which the detector loop uses to crop small,
far objects out of the full-resolution frame. Polygons in `mask` (a tree in the wind, a flag, a road outside
the area watched) never count as motion.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ingest.frames import Box, MotionResult

Polygon = Sequence[tuple[float, float]]


class MotionGate:
    """`detect(frame)` (or calling the gate) gives a `MotionResult`; `update(frame)` just the bool.

    Moving: more than `min_changed` of the (downscaled, unmasked) pixels differ from the background by more
    than `threshold` grey levels (and from the previous sample by half that, so the "ghost" a person leaves
    in the slowly adapting background after walking off is not motion), or one blob of changed pixels covers
    `min_region` of the frame (a single small, far person on a wide camera changes far less than
    `min_changed` of it). The gate works at `width` pixels; by default a sixth of the camera's width, from
    160 to 320, so a 1920-pixel camera's far people still span a few gate pixels. The background adapts at
    `learning_rate` per call, so lighting drifts and parked cars fade into it. One instance per camera (it
    holds that camera's background).
    """

    def __init__(
        self,
        width: int | None = None,
        threshold: int = 25,
        min_changed: float = 0.002,
        learning_rate: float = 0.05,
        mask: Sequence[Polygon] = (),
        min_region: float = 0.0008,
        merge_gap: float = 0.03,
        max_regions: int = 6,
    ) -> None:
        self.width = width
        self.threshold = threshold
        self.min_changed = min_changed
        self.learning_rate = learning_rate
        self.mask = [tuple(p) for p in mask]
        self.min_region = min_region  # (grown) blobs smaller than this fraction of the frame are noise
        self.merge_gap = merge_gap  # blobs closer than this (fraction of the width) become one region
        self.max_regions = max_regions  # more than this: one region around all of them
        self._background: np.ndarray | None = None
        self._previous: np.ndarray | None = None
        self._valid: np.ndarray | None = None  # 1 where motion counts, 0 under the mask
        self.last_changed = 0.0

    def _prepare(self, frame_bgr: np.ndarray) -> np.ndarray:
        h, w = frame_bgr.shape[:2]
        width = self.width or gate_width(w)
        small = cv2.resize(frame_bgr, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(gray, (5, 5), 0).astype(np.float32)

    def _valid_pixels(self, shape: tuple[int, ...]) -> np.ndarray:
        valid = np.ones(shape[:2], np.uint8)
        h, w = valid.shape
        for polygon in self.mask:
            points = np.array([[x * (w - 1), y * (h - 1)] for x, y in polygon], np.float32)
            cv2.fillPoly(valid, [np.round(points).astype(np.int32)], 0)
        return valid

    def update(self, frame_bgr: np.ndarray) -> bool:
        return self.detect(frame_bgr).moving

    def __call__(self, frame_bgr: np.ndarray) -> MotionResult:
        return self.detect(frame_bgr)

    def detect(self, frame_bgr: np.ndarray) -> MotionResult:
        gray = self._prepare(frame_bgr)
        if self._background is None or self._background.shape != gray.shape:
            self._background = gray
            self._previous = gray
            self._valid = self._valid_pixels(gray.shape)
            self.last_changed = 0.0
            return MotionResult(False)
        assert self._valid is not None and self._previous is not None
        # Changed from the background AND from the previous sample: what is moving now, not the "ghost" a
        # person leaves in the slowly adapting background after walking off.
        changed = (
            (cv2.absdiff(gray, self._background) > self.threshold)
            & (cv2.absdiff(gray, self._previous) > self.threshold / 2)
        ).astype(np.uint8) * self._valid
        cv2.accumulateWeighted(gray, self._background, self.learning_rate)
        self._previous = gray
        self.last_changed = float(np.count_nonzero(changed)) / max(int(np.count_nonzero(self._valid)), 1)
        if not self.last_changed:
            return MotionResult(False)
        regions = self._regions(changed)
        if self.last_changed <= self.min_changed and not regions:
            return MotionResult(False)
        return MotionResult(True, regions)

    def _regions(self, changed: np.ndarray) -> tuple[Box, ...]:
        h, w = changed.shape
        grown = cv2.dilate(changed, np.ones((3, 3), np.uint8), iterations=2)
        count, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
        min_px = self.min_region * h * w
        boxes = [
            [float(x) / w, float(y) / h, float(x + bw) / w, float(y + bh) / h]
            for x, y, bw, bh, area in stats[1:count]
            if area >= min_px
        ]
        merged = merge_boxes(boxes, self.merge_gap)
        if len(merged) > self.max_regions:
            merged = [_union(merged)]
        return tuple((b[0], b[1], b[2], b[3]) for b in merged)


def gate_width(frame_width: int) -> int:
    """The gate's working width for a camera: a sixth of it, at least 160 and at most 320 pixels."""
    return max(160, min(320, round(frame_width / 6)))


def merge_boxes(boxes: list[list[float]], gap: float) -> list[list[float]]:
    """Merge boxes that overlap or lie within `gap` of each other, until none do (largest first)."""
    boxes = [list(b) for b in boxes]
    merged = True
    while merged and len(boxes) > 1:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] - gap <= b[2] and b[0] - gap <= a[2] and a[1] - gap <= b[3] and b[1] - gap <= a[3]:
                    boxes[i] = _union([a, b])
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))


def _union(boxes: list[list[float]]) -> list[float]:
    return [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
