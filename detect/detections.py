"""One array-based detections type, shared by every detector backend.

Backends convert their raw output into `Detections` at the edge; everything downstream (rules, tracker,
snapshot drawing) works on these arrays only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Detections:
    """N detections in source-frame pixel coordinates.

    xyxy: (N, 4) float32 boxes; confidence: (N,) float32; class_id: (N,) int32 indices into `names`.
    coverage: the pixel rectangles the detectors looked at when they ran on region crops; empty: the whole
    frame. Objects outside it were not looked for (the tracker does not count them as missed).
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    names: tuple[str, ...]
    coverage: tuple[tuple[int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        n = len(self.confidence)
        if self.xyxy.shape != (n, 4) or self.class_id.shape != (n,):
            raise ValueError(
                f"inconsistent detection arrays: xyxy {self.xyxy.shape}, confidence {self.confidence.shape}, "
                f"class_id {self.class_id.shape}"
            )

    @classmethod
    def empty(cls, names: tuple[str, ...]) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int32),
            names=names,
        )

    def __len__(self) -> int:
        return len(self.confidence)

    @property
    def labels(self) -> list[str]:
        return [self.names[i] for i in self.class_id]

    def filter(self, mask: np.ndarray) -> Detections:
        return Detections(
            self.xyxy[mask], self.confidence[mask], self.class_id[mask], self.names, self.coverage
        )

    @staticmethod
    def merge(parts: list[Detections]) -> Detections:
        """Concatenate detections of several models; labels are kept by remapping onto one name table.

        The coverage is the union of the parts' crops, or the whole frame if any part ran on the whole frame.
        """
        names: list[str] = []
        for part in parts:
            for name in part.names:
                if name not in names:
                    names.append(name)
        if not parts:
            return Detections.empty(())
        remapped = [np.array([names.index(p.names[i]) for i in p.class_id], dtype=np.int32) for p in parts]
        return Detections(
            xyxy=np.concatenate([p.xyxy for p in parts]).astype(np.float32).reshape(-1, 4),
            confidence=np.concatenate([p.confidence for p in parts]).astype(np.float32),
            class_id=np.concatenate(remapped).astype(np.int32) if remapped else np.zeros(0, np.int32),
            names=tuple(names),
            coverage=tuple(r for p in parts for r in p.coverage) if all(p.coverage for p in parts) else (),
        )
