from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detect.nanodet import COCO_NAMES, NanoDetDetector

# Hand-labelled bus in ultralytics' bus.jpg (810x1080).
BUS_BOX = np.array([17, 231, 802, 768], np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def nanodet(model_paths: dict[str, Path]) -> NanoDetDetector:
    return NanoDetDetector(model_paths["nanodet"])


def test_names_are_coco(nanodet: NanoDetDetector) -> None:
    assert len(nanodet.names) == 80 == len(COCO_NAMES)
    assert nanodet.names[0] == "person" and nanodet.names[5] == "bus" and nanodet.names[79] == "toothbrush"


def test_bus_image(nanodet: NanoDetDetector, bus_bgr: np.ndarray) -> None:
    found = nanodet.detect(bus_bgr)
    labels = found.labels
    assert labels.count("person") >= 3
    assert labels.count("bus") == 1
    bus = found.xyxy[labels.index("bus")]
    assert iou(bus, BUS_BOX) > 0.8, bus
    h, w = bus_bgr.shape[:2]
    assert (
        (found.xyxy >= 0).all() and (found.xyxy[:, [0, 2]] <= w).all() and (found.xyxy[:, [1, 3]] <= h).all()
    )
    assert (found.confidence >= 0.35).all()
    assert list(found.confidence) == sorted(found.confidence, reverse=True)


def test_blank_frame_has_nothing(nanodet: NanoDetDetector) -> None:
    found = nanodet.detect(np.full((480, 640, 3), 127, np.uint8))
    assert len(found) == 0 and found.names == COCO_NAMES


def test_batch_matches_single_frames(
    nanodet: NanoDetDetector, bus_bgr: np.ndarray, zidane_bgr: np.ndarray
) -> None:
    assert nanodet.session.dynamic_batch
    frames = [bus_bgr, zidane_bgr, bus_bgr[::2, ::2].copy()]
    batched = nanodet.detect_batch(frames)
    assert len(batched) == 3
    for frame, got in zip(frames, batched, strict=True):
        single = nanodet.detect(frame)
        assert got.labels == single.labels
        np.testing.assert_allclose(got.xyxy, single.xyxy, atol=1e-2)
        np.testing.assert_allclose(got.confidence, single.confidence, atol=1e-4)
    assert nanodet.detect_batch([]) == []
