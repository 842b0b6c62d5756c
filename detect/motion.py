"""A cheap motion gate: downscaled grayscale frame against a running-average background."""

from __future__ import annotations

import cv2
import numpy as np


class MotionGate:
    """`update(frame)` is True when more than `min_changed` of the (downscaled) pixels changed.

    The background adapts at `learning_rate` per call, so lighting drifts and parked cars fade into it.
    One instance per camera (it holds that camera's background).
    """

    def __init__(
        self, width: int = 160, threshold: int = 25, min_changed: float = 0.002, learning_rate: float = 0.05
    ) -> None:
        self.width = width
        self.threshold = threshold
        self.min_changed = min_changed
        self.learning_rate = learning_rate
        self._background: np.ndarray | None = None
        self.last_changed = 0.0

    def _prepare(self, frame_bgr: np.ndarray) -> np.ndarray:
        h, w = frame_bgr.shape[:2]
        small = cv2.resize(
            frame_bgr, (self.width, max(1, round(h * self.width / w))), interpolation=cv2.INTER_AREA
        )
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(gray, (5, 5), 0).astype(np.float32)

    def update(self, frame_bgr: np.ndarray) -> bool:
        gray = self._prepare(frame_bgr)
        if self._background is None or self._background.shape != gray.shape:
            self._background = gray
            self.last_changed = 0.0
            return False
        diff = cv2.absdiff(gray, self._background)
        self.last_changed = float(np.count_nonzero(diff > self.threshold)) / diff.size
        cv2.accumulateWeighted(gray, self._background, self.learning_rate)
        return self.last_changed > self.min_changed
