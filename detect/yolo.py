"""Generic YOLOv8 / YOLO11 ONNX detector (ultralytics export, no NMS in the graph).

Output (B, 4 + nc, N): cx, cy, w, h in letterboxed input pixels, then nc class scores (no objectness).
Input: RGB, /255, letterboxed to the model size (grey 114 borders), NCHW.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cv2
import numpy as np

from detect.backends import Backend, open_session
from detect.batched import BatchedDetector
from detect.detections import Detections
from detect.nanodet import per_class_nms

DEFAULT_IMGSZ = 640
MAX_CANDIDATES = 3000
PROBE_SIZE = 64


def letterbox(frame: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio into a size x size canvas; returns canvas, scale, (left, top) pad."""
    h, w = frame.shape[:2]
    scale = min(size / h, size / w)
    nh, nw = round(h * scale), round(w * scale)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas = np.full((size, size, 3), 114, np.uint8)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[top : top + nh, left : left + nw] = cv2.resize(frame, (nw, nh), interpolation=interp)
    return canvas, scale, (left, top)


def names_from_metadata(metadata: dict[str, str]) -> tuple[str, ...] | None:
    """ultralytics stores names as a Python dict literal, e.g. "{0: 'smoke', 1: 'fire'}"."""
    raw = metadata.get("names")
    if not raw:
        return None
    parsed = ast.literal_eval(raw)
    if isinstance(parsed, dict):
        return tuple(str(parsed[i]) for i in sorted(parsed))
    return tuple(str(n) for n in parsed)


def check_output_shape(model_path: Path, output_shapes: list[tuple[int | str | None, ...]], nc: int) -> None:
    """Refuse what this decoder cannot read: NMS-in-graph or end-to-end exports (B, 300, 6), YOLOv5
    (B, N, 5 + nc), segmentation, pose or OBB heads (more rows), names that do not match the class count."""
    if not output_shapes:
        raise ValueError(f"{model_path}: the model has no outputs")
    shape = output_shapes[0]
    rows = shape[1] if len(shape) == 3 else None
    if len(shape) != 3 or (isinstance(rows, int) and rows != 4 + nc):
        raise ValueError(
            f"{model_path}: output shape {list(shape)} is not a YOLOv8/YOLO11 detection output "
            f"(batch, 4 + {nc} classes = {4 + nc}, anchors); export a detection model with ultralytics "
            "`format=onnx` and without `nms=True`, and give as many names as it has classes"
        )


class YoloDetector(BatchedDetector):
    def __init__(
        self,
        model_path: Path,
        score_threshold: float = 0.25,
        nms_iou: float = 0.45,
        threads: int = 1,
        names: tuple[str, ...] | None = None,
        backend: Backend = "onnxruntime",
        precision: str = "f32",
        imgsz: int | None = None,
    ) -> None:
        """`imgsz`: run a model exported with a dynamic input size at this size instead of the size it was
        trained at (smaller is faster and misses more of the small objects)."""
        self.session = open_session(model_path, backend, threads=threads, precision=precision)
        meta = self.session.metadata
        resolved = names or names_from_metadata(meta)
        if resolved is None:
            raise ValueError(f"{model_path}: no class names given and none in the ONNX metadata")
        self.names: tuple[str, ...] = resolved
        h, w = self.session.input_shape[2:4]
        if isinstance(h, int) and isinstance(w, int):
            if imgsz is not None and imgsz != h:
                raise ValueError(f"{model_path}: its input is fixed at {h}x{w}, it cannot run at {imgsz}")
            self.imgsz = h
        elif imgsz is not None:
            if imgsz % 32:
                raise ValueError(f"{model_path}: the input size must be a multiple of 32, not {imgsz}")
            self.imgsz = imgsz
        else:
            imgsz = ast.literal_eval(meta.get("imgsz", str(DEFAULT_IMGSZ)))
            self.imgsz = int(imgsz[0] if isinstance(imgsz, list | tuple) else imgsz)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self._check_layout(model_path)

    def _check_layout(self, model_path: Path) -> None:
        """Fail at load, not on the first frame, on a model this decoder cannot read."""
        h, w = self.session.input_shape[2:4]
        if isinstance(h, int) and isinstance(w, int) and h != w:
            raise ValueError(f"{model_path}: input {h}x{w} is not square: export with one imgsz")
        shapes = self.session.output_shapes
        if shapes and len(shapes[0]) == 3 and not isinstance(shapes[0][1], int):
            # Dynamic exports without onnxslim leave even the class rows symbolic: run one blank frame, a
            # small one where the input size is dynamic too (64: the largest YOLO stride, of P6 models).
            size = h if isinstance(h, int) else PROBE_SIZE
            probe = np.zeros((1, 3, size, size), np.float32)
            rows = int(self.session.run(probe)[0].shape[1])
            shapes = [(shapes[0][0], rows, shapes[0][2]), *shapes[1:]]
        check_output_shape(model_path, shapes, len(self.names))

    def preprocess(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
        canvas, scale, pad = letterbox(frame_bgr, self.imgsz)
        chw = canvas[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
        return chw, scale, pad

    def _infer(self, frames: list[np.ndarray]) -> list[Detections]:
        prepared = [self.preprocess(f) for f in frames]
        (output, *_) = self.session.run(np.stack([p[0] for p in prepared]))
        return [
            self._decode(output[b], scale, pad, frames[b].shape[:2])
            for b, (_, scale, pad) in enumerate(prepared)
        ]

    def _decode(
        self, pred: np.ndarray, scale: float, pad: tuple[int, int], frame_hw: tuple[int, ...]
    ) -> Detections:
        nc = len(self.names)
        if pred.shape[0] != 4 + nc:
            raise ValueError(
                f"{self.session.path}: model output has {pred.shape[0]} rows, expected 4 + {nc} classes"
            )
        scores = pred[4:]
        cls = scores.argmax(axis=0)
        conf = scores[cls, np.arange(scores.shape[1])]
        keep = np.flatnonzero(conf >= self.score_threshold)
        if keep.size == 0:
            return Detections.empty(self.names)
        if keep.size > MAX_CANDIDATES:
            keep = keep[np.argsort(-conf[keep])[:MAX_CANDIDATES]]
        cx, cy, w, h = pred[:4, keep]
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        xyxy -= np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)
        xyxy /= scale
        fh, fw = frame_hw[0], frame_hw[1]
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, fw)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, fh)
        conf, cls = conf[keep], cls[keep].astype(np.int32)
        order = per_class_nms(xyxy, conf, cls, self.nms_iou)
        return Detections(
            xyxy[order].astype(np.float32), conf[order].astype(np.float32), cls[order], self.names
        )
