"""Bring your own YOLO: the generic decoder on YOLO11/YOLOv8 exports, the ultralytics `.pt` backend, config.

torch and ultralytics only ever run in subprocesses: imported into this process they would triple ONNX Runtime
latency for every other test of the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from detect.detections import Detections
from detect.yolo import YoloDetector
from gridwatch.models import KeepLabels, ModelsMissing, load_custom, load_detectors
from gridwatch.settings import ConfigError, CustomModelSettings, ModelSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
ARCHS = ("yolo11n", "yolov8n")
TINY_IMGSZ = 320

# Random-weight nets from the ultralytics model configs (nothing downloaded), exported to ONNX at 320 with a
# dynamic and a static batch, plus one with NMS in the graph that the decoder must refuse. Names are renamed
# so that a test can tell names read from the metadata from any default.
EXPORT_TINY = r"""
import importlib.util, json, os, shutil, sys
from pathlib import Path
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "0"
from ultralytics import YOLO

out = Path(sys.argv[1])
simplify = importlib.util.find_spec("onnxslim") is not None
names = {}
for arch in sys.argv[2:]:
    model = YOLO(f"{arch}.yaml")
    model.model.names = {i: f"{arch}-class{i}" for i in range(len(model.names))}
    names[arch] = [model.model.names[i] for i in sorted(model.model.names)]
    variants = {"dynamic": {"dynamic": True}, "static": {"dynamic": False}}
    if arch == "yolo11n":
        variants["nms"] = {"dynamic": False, "nms": True}
    for variant, options in variants.items():
        exported = model.export(
            format="onnx", imgsz=int(os.environ["TINY_IMGSZ"]), simplify=simplify, device="cpu",
            verbose=False, **options,
        )
        shutil.move(exported, out / f"{arch}-{variant}.onnx")
print(json.dumps(names))
"""

# The fire/smoke checkpoint of fire-detector through the config path (suffix .pt: ultralytics backend), one
# torch thread, on the frames in argv[1]; prints detections, single and batched, and the time per frame.
RUN_PT = r"""
import json, sys, time
import numpy as np
import fire_detector  # noqa: F401  (registers the checkpoint's custom modules before it is unpickled)
import torch
from detect.backends.ultralytics_pt import UltralyticsDetector
from detect.models.fire_export import find_fire_checkpoint
from gridwatch.models import load_custom
from gridwatch.settings import CustomModelSettings, ModelSettings

custom = CustomModelSettings(path=find_fire_checkpoint(), score=float(sys.argv[2]))
detector = load_custom(custom, ModelSettings(threads=1))
assert isinstance(detector, UltralyticsDetector), type(detector)
frames = list(np.load(sys.argv[1]))

def plain(d):
    return {"xyxy": d.xyxy.tolist(), "conf": d.confidence.tolist(), "labels": d.labels}

single = [plain(detector.detect(f)) for f in frames]
batched = [plain(d) for d in detector.detect_batch(frames)]
times = []
for _ in range(5):
    start = time.perf_counter()
    detector.detect(frames[0])
    times.append(time.perf_counter() - start)
print(json.dumps({
    "names": list(detector.names), "imgsz": detector.imgsz, "threads": torch.get_num_threads(),
    "single": single, "batched": batched, "ms": 1000 * float(np.median(times)),
}))
"""


def _python(code: str, *args: str, cwd: Path, timeout: float) -> str:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "TINY_IMGSZ": str(TINY_IMGSZ)}
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    """Exported once per test session: (directory of ARCH-{dynamic,static,nms}.onnx, names per arch)."""
    out = tmp_path_factory.mktemp("tiny-yolo")
    names = json.loads(_python(EXPORT_TINY, str(out), *ARCHS, cwd=out, timeout=240))
    return out, names


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (200, 640, 3), np.uint8), rng.integers(0, 256, (480, 360, 3), np.uint8)]


def _assert_inside(found: Detections, frame: np.ndarray, names: tuple[str, ...]) -> None:
    h, w = frame.shape[:2]
    assert found.xyxy.dtype == np.float32 and found.confidence.dtype == np.float32
    assert found.class_id.dtype == np.int32 and found.names == names
    assert (found.xyxy[:, [0, 2]] >= 0).all() and (found.xyxy[:, [0, 2]] <= w).all()
    assert (found.xyxy[:, [1, 3]] >= 0).all() and (found.xyxy[:, [1, 3]] <= h).all()
    assert (found.xyxy[:, 2] >= found.xyxy[:, 0]).all() and (found.xyxy[:, 3] >= found.xyxy[:, 1]).all()
    assert ((found.class_id >= 0) & (found.class_id < len(names))).all()


def _assert_same(a: Detections, b: Detections) -> None:
    assert a.labels == b.labels
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.05)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_exports_load_with_names_from_metadata(
    tiny: tuple[Path, dict[str, list[str]]], arch: str
) -> None:
    out, names = tiny
    dynamic = YoloDetector(out / f"{arch}-dynamic.onnx")
    static = YoloDetector(out / f"{arch}-static.onnx")
    for detector in (dynamic, static):
        assert detector.names == tuple(names[arch]) and detector.names[3] == f"{arch}-class3"
        assert len(detector.names) == 80 and detector.imgsz == TINY_IMGSZ
    assert dynamic.session.dynamic_batch and not static.session.dynamic_batch


@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_on_dynamic_and_static_batches(tiny: tuple[Path, dict[str, list[str]]], arch: str) -> None:
    out, _ = tiny
    frames = _frames()
    # Random weights score about 1e-4 everywhere: a tiny threshold gives boxes to check.
    dynamic = YoloDetector(out / f"{arch}-dynamic.onnx", score_threshold=1e-5)
    static = YoloDetector(out / f"{arch}-static.onnx", score_threshold=1e-5)
    from_dynamic = dynamic.detect_batch(frames)  # one model call with a batch of 2
    from_static = static.detect_batch(frames)  # one call per frame
    assert len(from_dynamic) == len(from_static) == len(frames)
    for frame, d, s in zip(frames, from_dynamic, from_static, strict=True):
        assert len(d) > 0
        _assert_inside(d, frame, dynamic.names)
        assert (d.confidence >= 1e-5).all()
        _assert_same(d, dynamic.detect(frame))
        _assert_same(d, s)  # the same weights exported twice


def test_boxes_are_mapped_back_and_clipped_to_the_frame(tiny: tuple[Path, dict[str, list[str]]]) -> None:
    out, _ = tiny
    detector = YoloDetector(out / "yolo11n-static.onnx", score_threshold=0.5)
    frame = np.zeros((160, 320, 3), np.uint8)  # letterboxed at scale 1 with 80 px of padding above and below
    _, scale, pad = detector.preprocess(frame)
    assert (scale, pad) == (1.0, (0, 80))
    pred = np.zeros((4 + 80, 3), np.float32)
    pred[:4, 0] = [100, 120, 40, 20]  # inside: (80, 30, 120, 50) in the frame
    pred[:4, 1] = [300, 230, 80, 60]  # over the right and bottom edges
    pred[:4, 2] = [50, 50, 20, 20]  # a weak one
    pred[4 + 7, 0], pred[4 + 2, 1], pred[4 + 1, 2] = 0.9, 0.8, 0.3
    found = detector._decode(pred, scale, pad, frame.shape[:2])
    assert found.labels == ["yolo11n-class7", "yolo11n-class2"]
    np.testing.assert_allclose(found.xyxy, [[80, 30, 120, 50], [260, 120, 320, 160]])


def test_an_output_the_decoder_cannot_read_fails_at_load(tiny: tuple[Path, dict[str, list[str]]]) -> None:
    out, _ = tiny
    nms = out / "yolo11n-nms.onnx"
    with pytest.raises(ValueError, match=r"yolo11n-nms\.onnx: output shape \[1, 300, 6\] is not"):
        YoloDetector(nms)
    # Too few names for the 80 classes; the dynamic export leaves even the class rows symbolic.
    with pytest.raises(
        ValueError, match=r"yolo11n-dynamic\.onnx: output shape \['batch', 84, 'anchors'\].*4 \+ 2"
    ):
        YoloDetector(out / "yolo11n-dynamic.onnx", names=("a", "b"))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_custom_models_load_after_the_built_in_ones(
    tiny: tuple[Path, dict[str, list[str]]], models_dir: Path, media: dict[str, Path], backend: str
) -> None:
    tiny_path, fire_path = tiny[0] / "yolov8n-dynamic.onnx", models_dir / "fire-yolov8.onnx"
    renamed = [f"thing{i}" for i in range(80)]
    entries = [
        {"path": tiny_path, "backend": backend, "score": 1e-5, "names": renamed, "threads": 2},
        {"path": fire_path, "backend": backend, "score": 0.3, "labels": ["fire"]},
        {"path": fire_path, "backend": backend, "score": 0.3, "labels": ["smoke"]},
    ]
    custom = [CustomModelSettings.model_validate(entry) for entry in entries]
    detectors = load_detectors(ModelSettings(dir=models_dir, fire_enabled=False, custom=custom))
    assert len(detectors) == 4 and detectors[0].names[0] == "person"  # NanoDet first
    tiny_model, fire_only, smoke_only = detectors[1:]
    assert isinstance(tiny_model, YoloDetector) and tiny_model.names == tuple(renamed)
    assert tiny_model.session.path == tiny_path and tiny_model.detect(_frames()[0]).names == tuple(renamed)
    assert isinstance(fire_only, KeepLabels) and fire_only.names == ("smoke", "fire")
    frame = _flames_frames(media["flames"])[2]
    everything = YoloDetector(fire_path, score_threshold=0.3).detect(frame)
    assert "fire" in everything.labels
    _assert_same(fire_only.detect(frame), everything.filter(np.array(everything.labels) == "fire"))
    assert smoke_only.detect(frame).labels == [label for label in everything.labels if label == "smoke"]
    assert [d.labels for d in fire_only.detect_batch([frame, frame])] == [["fire"], ["fire"]]


def test_a_custom_file_gone_before_load_is_models_missing(
    tiny: tuple[Path, dict[str, list[str]]], tmp_path: Path
) -> None:
    path = tmp_path / "mine.onnx"
    path.write_bytes((tiny[0] / "yolo11n-static.onnx").read_bytes())
    custom = CustomModelSettings(path=path)
    path.unlink()
    with pytest.raises(ModelsMissing, match=r"custom model file missing: .*mine\.onnx"):
        load_custom(custom, ModelSettings())


def test_labels_must_be_among_the_model_names(tiny: tuple[Path, dict[str, list[str]]]) -> None:
    custom = CustomModelSettings(path=tiny[0] / "yolo11n-static.onnx", labels=["person"])
    with pytest.raises(ValueError, match=r"labels \['person'\] are not among the model's names"):
        load_custom(custom, ModelSettings())


def _flames_frames(flames: Path) -> np.ndarray:
    with av.open(str(flames)) as clip:
        images = [f.to_ndarray(format="bgr24") for i, f in enumerate(clip.decode(video=0)) if i % 5 == 0]
    return np.stack(images[6:20:3])  # 3-10 s into the clip: flames burning


def _match(onnx: Detections, pt: dict[str, Any]) -> None:
    """Every confident detection of one has the other's detection of the same label within a few pixels."""
    pt_xyxy, pt_conf = np.array(pt["xyxy"], np.float32).reshape(-1, 4), np.array(pt["conf"], np.float32)
    assert sorted(onnx.labels) == sorted(pt["labels"])
    for i, label in enumerate(onnx.labels):
        same = [j for j, other in enumerate(pt["labels"]) if other == label]
        j = min(same, key=lambda k: float(np.abs(pt_xyxy[k] - onnx.xyxy[i]).max()))
        assert np.abs(pt_xyxy[j] - onnx.xyxy[i]).max() <= 3.0, (onnx.xyxy[i], pt_xyxy[j])
        assert abs(float(pt_conf[j]) - float(onnx.confidence[i])) <= 0.05, (onnx.confidence[i], pt_conf[j])


def test_pt_backend_matches_the_onnx_export_on_flames(
    media: dict[str, Path], models_dir: Path, tmp_path: Path
) -> None:
    frames = _flames_frames(media["flames"])
    np.save(tmp_path / "frames.npy", frames)
    score = 0.3
    report = json.loads(_python(RUN_PT, str(tmp_path / "frames.npy"), str(score), cwd=REPO, timeout=240))
    assert report["names"] == ["smoke", "fire"] and report["imgsz"] == 640 and report["threads"] == 1
    onnx = YoloDetector(models_dir / "fire-yolov8.onnx", score_threshold=score, threads=1)
    for frame, single, batched in zip(frames, report["single"], report["batched"], strict=True):
        found = onnx.detect(frame)
        assert "fire" in found.labels, found.labels  # real flames found: the comparison is not vacuous
        _match(found, single)
        _match(found, batched)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        onnx.detect(frames[0])
        times.append(time.perf_counter() - start)
    print(f"flames frame, 1 thread: .pt {report['ms']:.0f} ms, ONNX {1000 * np.median(times):.0f} ms")


# -- config --------------------------------------------------------------------------------------------------


def _config(tmp_path: Path, custom: str) -> Path:
    config = tmp_path / "gridwatch.yaml"
    config.write_text(f"models:\n  custom:\n{custom}", encoding="utf-8")
    return config


@pytest.fixture
def weights(tmp_path: Path) -> dict[str, Path]:
    files = {suffix: tmp_path / f"mine.{suffix}" for suffix in ("onnx", "pt", "tflite")}
    for path in files.values():
        path.write_bytes(b"not checked until load")
    return files


def test_custom_section_backend_follows_the_suffix(tmp_path: Path, weights: dict[str, Path]) -> None:
    config = _config(
        tmp_path,
        f"    - path: {weights['onnx']}\n"
        f"    - path: {weights['pt']}\n      labels: [fire]\n      names: [smoke, fire]\n"
        f"    - path: {weights['onnx']}\n      backend: openvino\n      threads: 2\n      score: 0.5\n",
    )
    first, second, third = load_settings(config, environ={}).models.custom
    assert (first.resolved_backend, second.resolved_backend, third.resolved_backend) == (
        "onnxruntime",
        "ultralytics",
        "openvino",
    )
    assert first.threads is None and first.score == 0.35 and first.labels is None
    assert second.labels == ["fire"] and second.names == ["smoke", "fire"]
    assert third.threads == 2 and third.score == 0.5
    assert load_settings(None, environ={}).models.custom == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "    - path: {pt}\n      backend: onnxruntime\n",
            "is a PyTorch checkpoint: use backend ultralytics",
        ),
        ("    - path: {pt}\n      backend: openvino\n", "is a PyTorch checkpoint"),
        (
            "    - path: {onnx}\n      backend: ultralytics\n",
            "runs on onnxruntime or openvino, not ultralytics",
        ),
        (
            "    - path: {onnx}\n      backend: tensorrt\n",
            "models.custom[0].backend (line 4): Input should be",
        ),
        ("    - path: {tflite}\n", "must be a .onnx or .pt file"),
        ("    - path: {missing}\n", "custom model file {missing} not found"),
        ("    - path: {onnx}\n      weights: x\n", "models.custom[0].weights (line 4): unknown key"),
        ("    - path: {onnx}\n      score: 0\n", "models.custom[0].score (line 4): Input should be greater"),
        ("    - path: {onnx}\n      names: [a, a]\n", "names must be unique"),
        ("    - path: {onnx}\n      names: [a, b]\n      labels: [c]\n", "labels ['c'] are not among"),
        ("    - backend: onnxruntime\n", "models.custom[0].path (line 3): Field required"),
    ],
)
def test_custom_section_errors(tmp_path: Path, weights: dict[str, Path], entry: str, message: str) -> None:
    places = {key: str(path) for key, path in weights.items()} | {"missing": str(tmp_path / "gone.onnx")}
    config = _config(tmp_path, entry.format(**places))
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    text = str(caught.value)
    assert str(config) in text and "models.custom[0]" in text
    assert message.format(**places) in text, text
