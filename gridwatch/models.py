"""Loading the prepared detectors for the runtime (ONNX Runtime only: torch never enters this process)."""

from __future__ import annotations

from pathlib import Path

from detect.loop import Detector
from detect.nanodet import NanoDetDetector
from detect.yolo import YoloDetector
from gridwatch.settings import ModelSettings

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
            )
        )
    return detectors
