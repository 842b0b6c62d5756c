"""Region crops: run a detector on square crops around motion instead of the whole, shrunken frame.

A 1920x1080 camera fed whole to a 416x416 model shrinks everything about 4.6 times, and a person 60 pixels
tall at the far end of the street becomes 13 pixels: too small to find. Cropped around where something
moved, the same person reaches the model at full size. A crop is used only when it makes objects at least
`min_gain` times larger than the whole frame would, and only for up to `max_crops` crops per frame (each crop
is one more model input); otherwise the whole frame is run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ingest.frames import Box

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels


@dataclass(frozen=True, slots=True)
class CropPolicy:
    max_crops: int = 2  # model inputs per frame at most; more regions are merged or the whole frame is run
    margin: float = 0.2  # grow each motion region by this fraction of its size on every side (context)
    min_gain: float = 1.3  # crop only if objects reach the model at least this much larger
    max_area: float = 0.5  # crops covering more than this fraction of the frame: run the whole frame


def whole_frame_scale(width: int, height: int, input_size: int) -> float:
    """Linear scale from frame pixels to model pixels for the whole frame (geometric mean of the axes)."""
    return math.sqrt(input_size * input_size / (width * height))


def plan_crops(
    regions: Sequence[Box], width: int, height: int, input_size: int, policy: CropPolicy
) -> list[Rect] | None:
    """Square pixel crops that cover the motion regions, or None: run the whole frame."""
    if not regions:
        return None
    squares = [_square(r, width, height, input_size, policy.margin) for r in regions]
    squares = _merge_overlapping(squares, width, height, input_size)
    if len(squares) > policy.max_crops:
        squares = [_square_around(_union(squares), width, height, input_size)]
    for region in regions:  # a square clipped to the frame's short side may miss part of a region
        x0, y0, x1, y1 = region[0] * width, region[1] * height, region[2] * width, region[3] * height
        if not any(s[0] <= x0 + 1 and s[1] <= y0 + 1 and x1 - 1 <= s[2] and y1 - 1 <= s[3] for s in squares):
            return None
    side = max(s[2] - s[0] for s in squares)
    gain = (input_size / side) / whole_frame_scale(width, height, input_size)
    area = sum((s[2] - s[0]) * (s[3] - s[1]) for s in squares)
    if gain < policy.min_gain or area > policy.max_area * width * height:
        return None
    return squares


def _square(region: Box, width: int, height: int, input_size: int, margin: float) -> Rect:
    x0, y0, x1, y1 = region[0] * width, region[1] * height, region[2] * width, region[3] * height
    grow_x, grow_y = (x1 - x0) * margin, (y1 - y0) * margin
    return _square_around((x0 - grow_x, y0 - grow_y, x1 + grow_x, y1 + grow_y), width, height, input_size)


def _square_around(rect: tuple[float, float, float, float], width: int, height: int, input_size: int) -> Rect:
    """The smallest square (at least the model's input size, at most the frame's short side) centred on
    `rect`, shifted to lie inside the frame."""
    x0, y0, x1, y1 = rect
    side = math.ceil(max(x1 - x0, y1 - y0, input_size))
    side = min(side, width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = round(min(max(cx - side / 2, 0), width - side))
    top = round(min(max(cy - side / 2, 0), height - side))
    return (left, top, left + side, top + side)


def _merge_overlapping(squares: list[Rect], width: int, height: int, input_size: int) -> list[Rect]:
    squares = list(squares)
    merged = True
    while merged and len(squares) > 1:
        merged = False
        for i in range(len(squares)):
            for j in range(i + 1, len(squares)):
                if _overlap(squares[i], squares[j]) > 0.25:
                    squares[i] = _square_around(_union([squares[i], squares[j]]), width, height, input_size)
                    del squares[j]
                    merged = True
                    break
            if merged:
                break
    return squares


def _overlap(a: Rect, b: Rect) -> float:
    """Intersection over the smaller square's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def _union(rects: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    return (
        min(r[0] for r in rects),
        min(r[1] for r in rects),
        max(r[2] for r in rects),
        max(r[3] for r in rects),
    )
