"""Torch stays out of the runtime process (it triples ONNX Runtime latency and costs memory)."""

from __future__ import annotations

import subprocess
import sys


def test_the_runtime_never_imports_torch_or_ultralytics() -> None:
    code = (
        "import sys\n"
        "import gridwatch.cli, gridwatch.runtime, gridwatch.models, detect.nanodet, detect.yolo\n"
        "import detect.backends.openvino_runtime, detect.backends.onnx_runtime\n"
        "banned = {'torch', 'ultralytics', 'torchvision'}\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in banned)\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"
