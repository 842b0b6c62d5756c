"""A small ONNX Runtime session wrapper: CPU only, explicit thread counts, one input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


class OnnxSession:
    """One ORT session with a single input tensor.

    `threads` sets intra-op parallelism; inter-op is 1 (these graphs are sequential, and the worker runs one
    detector thread, so extra pools only oversubscribe the cores).
    """

    def __init__(self, model_path: Path, threads: int = 1, inter_op_threads: int = 1) -> None:
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"ONNX model {model_path} not found: run `gridwatch models prepare`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle pool threads sleep instead of spinning: the detector waits for frames much of the time, and
        # spinning threads would take CPU from the decoders on a small box.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(model_path)
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{model_path}: expected one input, found {[i.name for i in inputs]}")
        self.input_name: str = inputs[0].name
        self.input_shape: tuple[int | str | None, ...] = tuple(inputs[0].shape)
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        self.output_shapes: list[tuple[int | str | None, ...]] = [
            tuple(o.shape) for o in self.session.get_outputs()
        ]

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.input_shape[0], int)

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the model on one (B, C, H, W) float32 batch; outputs in the model's output order."""
        outputs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch)})
        return [np.asarray(o) for o in outputs]
