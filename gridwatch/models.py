"""Loading the prepared detectors for the runtime, then the user's own (`models.custom`).

Torch never enters this process unless a custom `.pt` model is configured on the ultralytics backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detect.detections import Detections
from detect.loop import Detector, input_size
from detect.nanodet import NanoDetDetector
from detect.yolo import YoloDetector
from gridwatch.settings import CustomModelSettings, ModelSettings

NANODET_FILE = "nanodet-m-416.onnx"
FIRE_FILE = "fire-yolov8.onnx"


class ModelsMissing(RuntimeError):
    pass


def model_paths(models_dir: Path) -> dict[str, Path]:
    return {"nanodet": models_dir / NANODET_FILE, "fire": models_dir / FIRE_FILE}


def load_detectors(settings: ModelSettings) -> list[Detector]:
    paths = model_paths(settings.dir)
    needed = ["nanodet"] + (["fire"] if settings.fire_enabled else [])
    missing = [str(paths[name]) for name in needed if not paths[name].is_file()]
    if missing:
        raise ModelsMissing(
            f"model file(s) missing: {', '.join(missing)}; run `gridwatch models prepare` (or `make models`)"
        )
    detectors: list[Detector] = [
        NanoDetDetector(
            paths["nanodet"],
            score_threshold=settings.objects_score,
            threads=settings.threads,
            backend=settings.objects_backend,
            precision=settings.precision,
        )
    ]
    if settings.fire_enabled:
        detectors.append(
            YoloDetector(
                paths["fire"],
                score_threshold=settings.fire_score,
                threads=settings.threads,
                backend=settings.fire_backend,
                precision=settings.precision,
                imgsz=settings.fire_imgsz,
            )
        )
    detectors += [load_custom(custom, settings) for custom in settings.custom]
    return detectors


class KeepLabels:
    """A detector whose detections of other labels than `labels` are dropped."""

    __slots__ = ("_keep", "inner", "input_size", "names")

    def __init__(self, inner: Detector, labels: list[str]) -> None:
        self.inner = inner
        self.names: tuple[str, ...] = inner.names
        self.input_size = input_size(inner)  # region crops need the wrapped model's input size
        self._keep = np.array([inner.names.index(label) for label in labels], np.int32)

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        return [d.filter(np.isin(d.class_id, self._keep)) for d in self.inner.detect_batch(frames)]


def load_custom(custom: CustomModelSettings, settings: ModelSettings) -> Detector:
    """One `models.custom` entry: a missing file is `ModelsMissing`, an unusable model a `ValueError`."""
    if not custom.path.is_file():
        raise ModelsMissing(f"custom model file missing: {custom.path} (models.custom)")
    names = tuple(custom.names) if custom.names else None
    threads = custom.threads or settings.threads
    backend = custom.resolved_backend
    detector: Detector
    if backend == "ultralytics":
        from detect.backends.ultralytics_pt import UltralyticsDetector  # imports torch: only when asked for

        detector = UltralyticsDetector(
            custom.path, score_threshold=custom.score, threads=threads, names=names
        )
    else:
        detector = YoloDetector(
            custom.path,
            score_threshold=custom.score,
            threads=threads,
            names=names,
            backend=backend,
            precision=settings.precision,
        )
    if custom.labels is None:
        return detector
    unknown = sorted(set(custom.labels) - set(detector.names))
    if unknown:
        raise ValueError(f"{custom.path}: labels {unknown} are not among the model's names {detector.names}")
    return KeepLabels(detector, custom.labels)
