from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detect.yolo import YoloDetector
from ingest.simulator.flames import composite_flames

REGION = (0.55, 0.45, 0.85, 0.95)


@pytest.fixture(scope="module")
def fire(model_paths: dict[str, Path]) -> YoloDetector:
    return YoloDetector(model_paths["fire"])


def test_names_come_from_onnx_metadata(fire: YoloDetector) -> None:
    assert fire.names == ("smoke", "fire")
    assert fire.imgsz == 640


def test_no_fire_or_smoke_on_bus(fire: YoloDetector, bus_bgr: np.ndarray) -> None:
    found = fire.detect(bus_bgr)
    assert len(found) == 0, list(zip(found.labels, found.confidence, strict=True))


@pytest.mark.parametrize("t", [0.5, 3.0])
def test_composited_flames_are_fire(fire: YoloDetector, bus_bgr: np.ndarray, t: float) -> None:
    frame = composite_flames(bus_bgr, t, seed=1, region=REGION)
    found = fire.detect(frame)
    flames = found.filter(found.class_id == found.names.index("fire"))
    assert len(flames) >= 1 and flames.confidence.max() >= 0.35
    h, w = frame.shape[:2]
    cx = (flames.xyxy[0, 0] + flames.xyxy[0, 2]) / 2 / w
    cy = (flames.xyxy[0, 1] + flames.xyxy[0, 3]) / 2 / h
    assert REGION[0] <= cx <= REGION[2] and REGION[1] <= cy <= REGION[3]


def test_composite_is_deterministic_and_leaves_input_alone(bus_bgr: np.ndarray) -> None:
    before = bus_bgr.copy()
    a = composite_flames(bus_bgr, 1.5, seed=4)
    np.testing.assert_array_equal(bus_bgr, before)
    np.testing.assert_array_equal(a, composite_flames(bus_bgr, 1.5, seed=4))
    assert a.shape == bus_bgr.shape and a.dtype == np.uint8
    assert not np.array_equal(a, composite_flames(bus_bgr, 1.6, seed=4))  # it flickers
    h, w = a.shape[:2]
    changed = np.any(a != bus_bgr, axis=2)
    assert (
        not changed[: h // 4].any() and not changed[:, : w // 4].any()
    )  # confined to the region and its glow


def test_batch_matches_single_frames(fire: YoloDetector, bus_bgr: np.ndarray) -> None:
    frames = [bus_bgr, composite_flames(bus_bgr, 2.0)]
    batched = fire.detect_batch(frames)
    for frame, got in zip(frames, batched, strict=True):
        single = fire.detect(frame)
        assert got.labels == single.labels
        np.testing.assert_allclose(got.xyxy, single.xyxy, atol=1e-2)


def test_a_smaller_input_size_still_finds_large_flames(
    model_paths: dict[str, Path], bus_bgr: np.ndarray
) -> None:
    small = YoloDetector(model_paths["fire"], imgsz=416)
    assert small.imgsz == 416
    found = small.detect(composite_flames(bus_bgr, 3.0, seed=1, region=REGION))
    assert "fire" in found.labels
    with pytest.raises(ValueError, match="multiple of 32"):
        YoloDetector(model_paths["fire"], imgsz=400)
