"""Zones and masks as polygons in normalised image coordinates (0..1), independent of stream resolution."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    polygon: tuple[Point, ...]

    def __post_init__(self) -> None:
        if len(self.polygon) < 3:
            raise ValueError(f"zone {self.name!r} needs at least 3 points")
        for x, y in self.polygon:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"zone {self.name!r}: point ({x}, {y}) is outside 0..1")

    def contains_point(self, x: float, y: float) -> bool:
        """Even-odd ray casting; points on an edge count as inside."""
        inside = False
        pts = self.polygon
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True):
            if _on_segment(x, y, x0, y0, x1, y1):
                return True
            if (y0 > y) != (y1 > y):
                cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
                if x < cross:
                    inside = not inside
        return inside

    def contains_box(self, box: Sequence[float], width: int, height: int) -> bool:
        """Whether an object stands in the zone: the bottom centre of its box (its feet or wheels)."""
        x0, _, x1, y1 = box
        return self.contains_point((x0 + x1) / 2 / width, y1 / height)


def _on_segment(x: float, y: float, x0: float, y0: float, x1: float, y1: float, eps: float = 1e-9) -> bool:
    cross = (x - x0) * (y1 - y0) - (y - y0) * (x1 - x0)
    if abs(cross) > eps:
        return False
    return min(x0, x1) - eps <= x <= max(x0, x1) + eps and min(y0, y1) - eps <= y <= max(y0, y1) + eps
