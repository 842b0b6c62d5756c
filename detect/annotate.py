"""Drawing detections onto a frame for snapshots."""

from __future__ import annotations

import cv2
import numpy as np

from detect.detections import Detections

_COLOURS = {
    "fire": (0, 0, 255),
    "smoke": (160, 160, 160),
    "person": (0, 200, 0),
}
_DEFAULT = (255, 160, 0)


def draw_detections(image: np.ndarray, detections: Detections) -> np.ndarray:
    """A copy of `image` with a box and `label score` for every detection."""
    out = image.copy()
    thickness = max(1, round(min(out.shape[:2]) / 300))
    for (x0, y0, x1, y1), score, label in zip(
        detections.xyxy, detections.confidence, detections.labels, strict=True
    ):
        colour = _COLOURS.get(label, _DEFAULT)
        p0, p1 = (int(x0), int(y0)), (int(x1), int(y1))
        cv2.rectangle(out, p0, p1, colour, thickness)
        text = f"{label} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = max(p0[1], th + base + 2)
        cv2.rectangle(out, (p0[0], ty - th - base - 2), (p0[0] + tw + 2, ty), colour, -1)
        cv2.putText(out, text, (p0[0] + 1, ty - base - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return out


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
