"""OpenVINO and ONNX Runtime run the same ONNX files and must agree."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.backends import open_session
from detect.nanodet import NanoDetDetector
from detect.yolo import YoloDetector

ASSETS = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets"  # type: ignore[union-attr,arg-type]


@pytest.fixture(scope="module")
def bus() -> np.ndarray:
    return cv2.imread(str(ASSETS / "bus.jpg"))


def _sorted(d):  # type: ignore[no-untyped-def]
    order = np.lexsort((d.xyxy[:, 0], d.class_id))
    return d.class_id[order], d.xyxy[order], d.confidence[order]


def test_openvino_f32_matches_onnxruntime(models_dir: Path, bus: np.ndarray) -> None:
    ort = NanoDetDetector(models_dir / "nanodet-m-416.onnx").detect(bus)
    ov = NanoDetDetector(models_dir / "nanodet-m-416.onnx", backend="openvino").detect(bus)
    (c1, b1, s1), (c2, b2, s2) = _sorted(ort), _sorted(ov)
    assert c1.tolist() == c2.tolist()
    assert np.abs(b1 - b2).max() < 1.0 and np.abs(s1 - s2).max() < 0.01


def test_openvino_bf16_keeps_the_detections(models_dir: Path, bus: np.ndarray) -> None:
    found = NanoDetDetector(models_dir / "nanodet-m-416.onnx", backend="openvino", precision="bf16").detect(
        bus
    )
    assert found.labels.count("person") >= 3 and "bus" in found.labels
    fire = YoloDetector(models_dir / "fire-yolov8.onnx", backend="openvino", precision="bf16", threads=2)
    assert fire.names == ("smoke", "fire") and len(fire.detect(bus)) == 0


def test_unknown_backend_and_precision_are_refused(models_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        open_session(models_dir / "nanodet-m-416.onnx", "tensorrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision"):
        open_session(models_dir / "nanodet-m-416.onnx", "openvino", precision="int8")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_session_can_be_run_from_several_threads_at_once(
    models_dir: Path, bus: np.ndarray, backend: str
) -> None:
    """The detector loop's inference workers share one session (OpenVINO: an infer request per thread)."""
    from concurrent.futures import ThreadPoolExecutor

    session = open_session(models_dir / "nanodet-m-416.onnx", backend)  # type: ignore[arg-type]
    batch = NanoDetDetector.preprocess(bus)[None]
    other = NanoDetDetector.preprocess(cv2.flip(bus, 1))[None]
    alone = [session.run(batch), session.run(other)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(session.run, [batch, other] * 4))
    for i, outputs in enumerate(together):
        for got, want in zip(outputs, alone[i % 2], strict=True):
            np.testing.assert_allclose(got, want, atol=1e-4)
