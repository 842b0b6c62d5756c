"""The TF.js -> ONNX converter on a tiny handmade graph, checked against numpy versions of the TF ops.

The numpy reference below was checked once against TensorFlow 2.21 itself (max abs diff 5e-6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from detect.models.tfjs_to_onnx import convert_tfjs_to_onnx, load_tfjs_graph

RNG = np.random.default_rng(3)
CONV1 = RNG.normal(size=(3, 3, 2, 4)).astype(np.float32)  # HWIO
BIAS1 = RNG.normal(size=(4,)).astype(np.float32)
CONV2 = RNG.normal(size=(3, 3, 2, 4)).astype(np.float16).astype(np.float32)  # grouped: 4 in, 2 groups
BIAS2 = RNG.normal(size=(4,)).astype(np.float32)


def _const(name: str, dtype: str = "DT_INT32") -> dict[str, Any]:
    return {"name": name, "op": "Const", "attr": {"dtype": {"type": dtype}, "value": {"tensor": {}}}}


def _node(name: str, op: str, inputs: list[str], **attr: Any) -> dict[str, Any]:
    return {"name": name, "op": op, "input": inputs, "attr": attr}


NHWC = {"s": "TkhXQw=="}  # base64 "NHWC"
VALID = {"s": "VkFMSUQ="}
SAME = {"s": "U0FNRQ=="}
ONES = {"list": {"i": ["1", "1", "1", "1"]}}


def write_model(
    tmp: Path, nodes_extra: list[dict[str, Any]] | None = None, reshape: list[int] | None = None
) -> Path:
    """Input NCHW (1, 2, 8, 8) -> NHWC, Pad, Conv2D+bias, LeakyRelu, PadV2(-inf), MaxPool, grouped
    Conv2D+bias, ResizeBilinear(half pixel), SplitV, Sigmoid, ConcatV2, -> NCHW, Reshape (its shape from
    SparseToDense+AddV2, as in NanoDet)."""
    weights: list[tuple[str, np.ndarray, str | None]] = [
        ("to_nhwc", np.array([0, 2, 3, 1], np.int32), None),
        ("pads", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32), None),
        ("w1", CONV1, None),
        ("b1", BIAS1, None),
        ("pads2", np.array([[0, 0], [0, 1], [0, 1], [0, 0]], np.int32), None),
        ("neg_inf", np.array(-np.inf, np.float32), None),
        ("w2", CONV2, "float16"),
        ("b2", BIAS2, None),
        ("size", np.array([6, 6], np.int32), None),
        ("splits", np.array([3, -1], np.int32), None),
        ("split_dim", np.array(3, np.int32), None),
        ("cat_axis", np.array(-1, np.int32), None),
        ("to_nchw", np.array([0, 3, 1, 2], np.int32), None),
        ("shape_base", np.array(reshape or [1, 4, -1], np.int32), None),
        ("sp_idx", np.zeros((0, 1), np.int32), None),
        ("sp_shape", np.array([3], np.int32), None),
        ("sp_vals", np.zeros((0,), np.int32), None),
        ("sp_default", np.array(0, np.int32), None),
    ]
    nodes = [
        {
            "name": "input_1",
            "op": "Placeholder",
            "attr": {
                "dtype": {"type": "DT_FLOAT"},
                "shape": {"shape": {"dim": [{"size": "1"}, {"size": "2"}, {"size": "8"}, {"size": "8"}]}},
            },
        },
        *[_const(n, "DT_FLOAT" if a.dtype == np.float32 else "DT_INT32") for n, a, _ in weights],
        _node("nhwc", "Transpose", ["input_1", "to_nhwc"]),
        _node("pad", "Pad", ["nhwc", "pads"]),
        _node(
            "conv1", "Conv2D", ["pad", "w1"], strides=ONES, padding=VALID, data_format=NHWC, dilations=ONES
        ),
        _node("add1", "Add", ["conv1", "b1"]),
        _node("act", "LeakyRelu", ["add1"], alpha={"f": 0.1}),
        _node("pad2", "PadV2", ["act", "pads2", "neg_inf"]),
        _node(
            "pool",
            "MaxPool",
            ["pad2"],
            ksize={"list": {"i": ["1", "3", "3", "1"]}},
            strides={"list": {"i": ["1", "2", "2", "1"]}},
            padding=VALID,
            data_format=NHWC,
        ),
        _node("conv2", "Conv2D", ["pool", "w2"], strides=ONES, padding=SAME, data_format=NHWC),
        _node("add2", "AddV2", ["conv2", "b2"]),
        _node(
            "up",
            "ResizeBilinear",
            ["add2", "size"],
            half_pixel_centers={"b": True},
            align_corners={"b": False},
        ),
        _node("split", "SplitV", ["up", "splits", "split_dim"], num_split={"i": "2"}),
        _node("sig", "Sigmoid", ["split"]),
        _node("cat", "ConcatV2", ["sig", "split:1", "cat_axis"], N={"i": "2"}),
        _node("nchw", "Transpose", ["cat", "to_nchw"]),
        _node("sparse", "SparseToDense", ["sp_idx", "sp_shape", "sp_vals", "sp_default"]),
        _node("shape", "AddV2", ["shape_base", "sparse"]),
        _node("reshape", "Reshape", ["nchw", "shape"]),
        _node("Identity", "Identity", ["reshape"]),
        *(nodes_extra or []),
    ]
    manifest_weights = []
    blobs = []
    for name, array, quant in weights:
        entry: dict[str, Any] = {"name": name, "shape": list(array.shape), "dtype": str(array.dtype)}
        if quant:
            entry["quantization"] = {"dtype": quant, "original_dtype": "float32"}
            blobs.append(array.astype(np.float16).tobytes())
        else:
            blobs.append(array.tobytes())
        manifest_weights.append(entry)
    (tmp / "weights.bin").write_bytes(b"".join(blobs))
    spec = {
        "format": "graph-model",
        "modelTopology": {"node": nodes, "versions": {}},
        "weightsManifest": [{"paths": ["weights.bin"], "weights": manifest_weights}],
    }
    path = tmp / "model.json"
    path.write_text(json.dumps(spec))
    return path


# ------------------------------------------------------------------------------------------ numpy reference


def conv2d_nhwc(x: np.ndarray, w: np.ndarray, pad_same: bool) -> np.ndarray:
    kh, kw, cin_g, cout = w.shape
    groups = x.shape[3] // cin_g
    if pad_same:
        x = np.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    n, h, wd, _ = x.shape
    oh, ow = h - kh + 1, wd - kw + 1
    out = np.zeros((n, oh, ow, cout), np.float64)
    per_group = cout // groups
    for o in range(cout):
        g = o // per_group
        xs = x[..., g * cin_g : (g + 1) * cin_g]
        for dy in range(kh):
            for dx in range(kw):
                out[..., o] += xs[:, dy : dy + oh, dx : dx + ow, :] @ w[dy, dx, :, o]
    return out


def maxpool_valid(x: np.ndarray, k: int, s: int) -> np.ndarray:
    n, h, w, c = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for dy in range(k):
        for dx in range(k):
            out = np.maximum(out, x[:, dy : dy + s * oh : s, dx : dx + s * ow : s, :])
    return out


def resize_bilinear_half_pixel(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    def weights(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        lo = np.floor(src)
        frac = src - lo
        return np.clip(lo, 0, in_size - 1).astype(int), np.clip(lo + 1, 0, in_size - 1).astype(int), frac

    y0, y1, fy = weights(oh, x.shape[1])
    x0, x1, fx = weights(ow, x.shape[2])
    top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y0][:, :, x1] * fx[None, None, :, None]
    bot = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y1][:, :, x1] * fx[None, None, :, None]
    return top * (1 - fy)[None, :, None, None] + bot * fy[None, :, None, None]


def reference(x_nchw: np.ndarray) -> np.ndarray:
    x = x_nchw.astype(np.float64).transpose(0, 2, 3, 1)
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = conv2d_nhwc(x, CONV1, pad_same=False) + BIAS1
    x = np.where(x > 0, x, 0.1 * x)
    x = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)), constant_values=-np.inf)
    x = maxpool_valid(x, 3, 2)
    x = conv2d_nhwc(x, CONV2, pad_same=True) + BIAS2
    x = resize_bilinear_half_pixel(x, 6, 6)
    x = np.concatenate([1 / (1 + np.exp(-x[..., :3])), x[..., 3:]], axis=-1)
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], 4, -1)


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input_1": x})
    return np.asarray(out)


# ------------------------------------------------------------------------------------------ tests


def test_loader_dequantises_float16(tmp_path: Path) -> None:
    graph = load_tfjs_graph(write_model(tmp_path))
    np.testing.assert_array_equal(graph.weights["w2"], CONV2)
    assert graph.weights["w2"].dtype == np.float32
    assert graph.outputs == ["Identity"]


def test_converted_graph_matches_numpy(tmp_path: Path) -> None:
    onnx_path = convert_tfjs_to_onnx(write_model(tmp_path), tmp_path / "m.onnx")
    x = RNG.normal(size=(1, 2, 8, 8)).astype(np.float32)
    got = run_onnx(onnx_path, x)
    assert got.shape == (1, 4, 36)
    np.testing.assert_allclose(got, reference(x), rtol=1e-4, atol=1e-4)


def test_dynamic_batch(tmp_path: Path) -> None:
    onnx_path = convert_tfjs_to_onnx(write_model(tmp_path), tmp_path / "m.onnx", dynamic_batch=True)
    x = RNG.normal(size=(3, 2, 8, 8)).astype(np.float32)
    got = run_onnx(onnx_path, x)
    assert got.shape == (3, 4, 36)
    np.testing.assert_allclose(got, reference(x), rtol=1e-4, atol=1e-4)


def test_static_batch(tmp_path: Path) -> None:
    onnx_path = convert_tfjs_to_onnx(write_model(tmp_path), tmp_path / "m.onnx", dynamic_batch=False)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 2, 8, 8]


def test_reshape_that_mixes_batch_is_refused_only_when_dynamic(tmp_path: Path) -> None:
    model = write_model(tmp_path, reshape=[4, -1, 9])
    with pytest.raises(ValueError, match="Reshape node 'reshape'"):
        convert_tfjs_to_onnx(model, tmp_path / "m.onnx", dynamic_batch=True)
    convert_tfjs_to_onnx(model, tmp_path / "m.onnx", dynamic_batch=False)


def test_unsupported_op_is_named(tmp_path: Path) -> None:
    extra = [_node("soft", "Softmax", ["reshape"])]
    with pytest.raises(ValueError, match=r"unsupported TF.js op 'Softmax' at node 'soft'"):
        convert_tfjs_to_onnx(write_model(tmp_path, nodes_extra=extra), tmp_path / "m.onnx")
