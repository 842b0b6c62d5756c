"""NanoDet-m (COCO, 416x416) on ONNX Runtime: preprocessing, GFL box decoding and per-class NMS.

The model (converted from TF.js by `detect.models.tfjs_to_onnx`) outputs, per stride 8/16/32, class scores
(B, N, 80) that are already sigmoid-activated, and box distributions (B, N, 44) = 4 sides (l, t, r, b) x 11
bins. Softmax over the bins, take the expectation, multiply by the stride: distances from the cell centre
((x + 0.5) * stride, (y + 0.5) * stride). Cells are row-major (index = y * W + x).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detect.backends import Backend, open_session
from detect.batched import BatchedDetector
from detect.detections import Detections

COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
REG_BINS = 11
MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)
MAX_CANDIDATES = 1000


def _centres(stride: int) -> np.ndarray:
    cells = INPUT_SIZE // stride
    ys, xs = np.mgrid[0:cells, 0:cells]
    return (np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) + 0.5) * stride


_CENTRES = {s: _centres(s) for s in STRIDES}
_BINS = np.arange(REG_BINS, dtype=np.float32)


class NanoDetDetector(BatchedDetector):
    """COCO object detector. Frames are resized (plain stretch, no letterbox) to 416x416; boxes come back in
    source-frame pixels. `detect_batch` runs one inference call when the model has a dynamic batch."""

    def __init__(
        self,
        model_path: Path,
        score_threshold: float = 0.35,
        nms_iou: float = 0.6,
        threads: int = 1,
        backend: Backend = "onnxruntime",
        precision: str = "f32",
    ) -> None:
        self.session = open_session(model_path, backend, threads=threads, precision=precision)
        self.names = COCO_NAMES
        self.input_size = INPUT_SIZE
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self._heads = self._match_heads()

    def _match_heads(self) -> list[tuple[int, int, int]]:
        """(stride, score output index, box output index), matched by shape rather than by name."""
        by_cells: dict[int, dict[int, int]] = {}
        for i, shape in enumerate(self.session.output_shapes):
            by_cells.setdefault(int(shape[1]), {})[int(shape[2])] = i  # type: ignore[arg-type]
        heads = []
        for stride in STRIDES:
            cells = (INPUT_SIZE // stride) ** 2
            found = by_cells.get(cells, {})
            if len(COCO_NAMES) not in found or 4 * REG_BINS not in found:
                raise ValueError(f"{self.session.path}: no NanoDet head for stride {stride} ({cells} cells)")
            heads.append((stride, found[len(COCO_NAMES)], found[4 * REG_BINS]))
        return heads

    @staticmethod
    def preprocess(frame_bgr: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (3, 416, 416) float32, normalised."""
        resized = cv2.resize(frame_bgr, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        return ((resized.astype(np.float32) - MEAN_BGR) / STD_BGR).transpose(2, 0, 1)

    def _infer(self, frames: list[np.ndarray]) -> list[Detections]:
        outputs = self.session.run(np.stack([self.preprocess(f) for f in frames]))
        return [self._decode([o[b] for o in outputs], frames[b].shape[:2]) for b in range(len(frames))]

    def _decode(self, outputs: list[np.ndarray], frame_hw: tuple[int, ...]) -> Detections:
        boxes, scores, classes = [], [], []
        for stride, score_idx, box_idx in self._heads:
            cls_scores = outputs[score_idx]
            best = cls_scores.argmax(axis=1)
            conf = cls_scores[np.arange(len(best)), best]
            keep = np.flatnonzero(conf >= self.score_threshold)
            if keep.size == 0:
                continue
            dist = outputs[box_idx][keep].reshape(-1, 4, REG_BINS)
            dist = np.exp(dist - dist.max(axis=2, keepdims=True))
            dist /= dist.sum(axis=2, keepdims=True)
            ltrb = (dist @ _BINS) * stride
            centre = _CENTRES[stride][keep]
            boxes.append(np.concatenate([centre - ltrb[:, :2], centre + ltrb[:, 2:]], axis=1))
            scores.append(conf[keep])
            classes.append(best[keep])
        if not boxes:
            return Detections.empty(self.names)
        xyxy = np.concatenate(boxes)
        conf = np.concatenate(scores)
        cls = np.concatenate(classes).astype(np.int32)
        if len(conf) > MAX_CANDIDATES:
            top = np.argsort(-conf)[:MAX_CANDIDATES]
            xyxy, conf, cls = xyxy[top], conf[top], cls[top]
        h, w = frame_hw[0], frame_hw[1]
        xyxy = xyxy * np.array([w, h, w, h], np.float32) / INPUT_SIZE
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        keep = per_class_nms(xyxy, conf, cls, self.nms_iou)
        return Detections(xyxy[keep].astype(np.float32), conf[keep].astype(np.float32), cls[keep], self.names)


def per_class_nms(xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by class-aware NMS, best score first."""
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxesBatched(
        xywh.astype(np.float32).tolist(), scores.astype(np.float32).tolist(), class_ids.tolist(), 0.0, iou
    )
    idx = np.asarray(keep, np.int64).reshape(-1)
    return idx[np.argsort(-scores[idx], kind="stable")]
