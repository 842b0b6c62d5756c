"""User YOLO weights (`.pt`) run by ultralytics on the CPU, with the face of `YoloDetector`.

Meant for trying weights before exporting them to ONNX: it is about twice as slow as ONNX Runtime and it pulls
torch into the process, whose thread pool slows ONNX Runtime models in the same process down (about 3x).
torch and ultralytics are imported here only, when a detector is built: the default runtime never loads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from detect.detections import Detections

DEFAULT_IMGSZ = 640


def _offline() -> None:
    # Read by ultralytics at import time: no downloads, no pip installs from inside the pipeline.
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"


def _imgsz(overrides: dict[str, Any]) -> int:
    raw = overrides.get("imgsz") or DEFAULT_IMGSZ
    return int(raw[0] if isinstance(raw, list | tuple) else raw)


class UltralyticsDetector:
    """A detection `.pt` checkpoint on ultralytics: CPU, `threads` torch threads, the checkpoint's imgsz.

    Checkpoints that pickle custom modules need their package imported first (e.g. `import fire_detector`).
    A torch model is not called from two threads at once: the detector loop runs it on its own thread.
    """

    thread_safe = False

    def __init__(
        self,
        model_path: Path,
        score_threshold: float = 0.25,
        nms_iou: float = 0.45,
        threads: int = 1,
        names: tuple[str, ...] | None = None,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"YOLO checkpoint {path} not found")
        _offline()
        import torch
        from ultralytics import YOLO

        try:
            self.model = YOLO(str(path))
        except Exception as exc:  # ultralytics raises anything from pickle, torch and its own checks
            hint = ""
            if isinstance(exc, AttributeError | ModuleNotFoundError):  # unpickling a module it cannot find
                hint = (
                    " (the checkpoint pickles custom modules: import their package first, or export to ONNX)"
                )
            raise ValueError(f"{path}: cannot load as an ultralytics YOLO checkpoint: {exc}{hint}") from exc
        if self.model.task != "detect":
            raise ValueError(f"{path}: an ultralytics {self.model.task!r} model, not a detection model")
        model_names = self.model.names
        own = tuple(str(model_names[i]) for i in sorted(model_names))
        if names is not None and len(names) != len(own):
            raise ValueError(f"{path}: {len(names)} names given but the model has {len(own)} classes {own}")
        self.names: tuple[str, ...] = names or own
        self.path = path
        self.imgsz = _imgsz(self.model.overrides)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.threads = threads
        self._torch = torch
        # The first predict builds the predictor, whose device selection resets torch's thread count: warm up
        # first, then set the threads (and again before every call, in case ultralytics rebuilds it).
        self._predict([np.zeros((self.imgsz, self.imgsz, 3), np.uint8)])
        torch.set_num_threads(threads)

    def detect(self, frame_bgr: np.ndarray) -> Detections:
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        if not frames:
            return []
        return [self._to_detections(r) for r in self._predict(frames)]

    def _predict(self, frames: list[np.ndarray]) -> list[Any]:
        if self._torch.get_num_threads() != self.threads:
            self._torch.set_num_threads(self.threads)
        return list(
            self.model.predict(
                frames,  # a list of numpy frames is one batch; numpy frames are taken as BGR, like ours
                imgsz=self.imgsz,
                conf=self.score_threshold,
                iou=self.nms_iou,
                device="cpu",
                rect=False,  # square letterbox, as in the ONNX export: same boxes as `YoloDetector`
                verbose=False,
            )
        )

    def _to_detections(self, result: Any) -> Detections:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return Detections.empty(self.names)
        xyxy = boxes.xyxy.cpu().numpy().astype(np.float32).reshape(-1, 4)
        h, w = result.orig_shape
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        return Detections(
            xyxy,
            boxes.conf.cpu().numpy().astype(np.float32).reshape(-1),
            boxes.cls.cpu().numpy().astype(np.int32).reshape(-1),
            self.names,
        )
