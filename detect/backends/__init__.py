"""Inference backends: each session has `run(batch)`, `input_shape`, `output_shapes` and `metadata`.

`ultralytics_pt` is not a session but a whole detector for user `.pt` weights; it imports torch, so nothing
here imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import numpy as np

Backend = Literal["onnxruntime", "openvino"]


class Session(Protocol):
    path: Path
    input_shape: tuple[int | str | None, ...]
    output_names: list[str]
    output_shapes: list[tuple[int | str | None, ...]]

    @property
    def dynamic_batch(self) -> bool: ...

    @property
    def metadata(self) -> dict[str, str]: ...

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


def open_session(
    model_path: Path, backend: Backend = "onnxruntime", threads: int = 1, precision: str = "f32"
) -> Session:
    """The model on the chosen backend; both read the same ONNX file."""
    if backend == "onnxruntime":
        from detect.backends.onnx_runtime import OnnxSession

        return OnnxSession(model_path, threads=threads)
    if backend == "openvino":
        from detect.backends.openvino_runtime import OpenVinoSession

        return OpenVinoSession(model_path, threads=threads, precision=precision)
    raise ValueError(f"unknown backend {backend!r}: use onnxruntime or openvino")
