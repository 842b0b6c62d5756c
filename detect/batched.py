"""What every detector shares: one frame or a batch, and a loop where the model's batch size is fixed."""

from __future__ import annotations

import numpy as np

from detect.backends import Session
from detect.detections import Detections


class BatchedDetector:
    session: Session

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        """One model call for the batch if the model's batch size is dynamic, else one call per frame."""
        if not frames:
            return []
        if not self.session.dynamic_batch and len(frames) > 1:
            return [result for frame in frames for result in self._infer([frame])]
        return self._infer(frames)

    def _infer(self, frames: list[np.ndarray]) -> list[Detections]:
        raise NotImplementedError
