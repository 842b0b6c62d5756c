"""A cue that real fire has and scenery does not: the picture inside the object's box keeps changing.

Floodlights, sunset glare and hazy sky can score as fire or smoke on every frame, but they stand still; flames
flicker. The cue is the mean absolute grey-level change (0-255) of the box's content between two detections of
the same tracked object, measured on a 32x32 thumbnail so sensor noise averages out.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

THUMB = 32


def box_thumbnail(image_bgr: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    height, width = image_bgr.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    grey = cv2.cvtColor(image_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


class FlickerMeter:
    """Per tracked object: the median change over its last `window` pairs of detections."""

    def __init__(self, window: int = 3) -> None:
        self.window = window
        self._last: dict[int, tuple[tuple[float, float, float, float], np.ndarray]] = {}
        self._values: dict[int, deque[float]] = {}

    def update(
        self, image_bgr: np.ndarray, boxes: dict[int, tuple[float, float, float, float]], live: set[int]
    ) -> dict[int, float]:
        """Feed the boxes of the tracks detected in this frame; `live` are all tracks still alive (the others
        are forgotten). Returns the cue of every live track that has one."""
        for track_id in [t for t in self._last if t not in live]:
            self._last.pop(track_id)
            self._values.pop(track_id, None)
        out: dict[int, float] = {}
        for track_id, box in boxes.items():
            previous = self._last.get(track_id)
            if previous is not None:
                # Compare the same place in both frames: where the object was last time.
                before = previous[1]
                now = box_thumbnail(image_bgr, previous[0])
                if now is not None:
                    values = self._values.setdefault(track_id, deque(maxlen=self.window))
                    values.append(float(np.abs(now - before).mean()))
            thumb = box_thumbnail(image_bgr, box)
            if thumb is not None:
                self._last[track_id] = (box, thumb)
        for track_id in live:
            if self._values.get(track_id):
                out[track_id] = float(np.median(self._values[track_id]))
        return out
