"""TensorRT's ONNX-parser rules, checked on a graph before it is written (``export``) or on demand
(``edge-stpm check-graph``). Needs only ``onnx``.

The rules come from onnx-tensorrt: ``ModelImporter.cpp`` (no UINT8 intermediate tensors; Q/DQ data types) and
``docs/operators.md`` of the 8.6-GA release, the oldest TensorRT we target (JetPack 6.0), whose operator matrix
is ``TRT86_OPS`` below (operator → data types it takes). A graph that passes here uses only what TensorRT 8.6
parses; 10.x and 11.x parse a superset of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
from onnx import TensorProto, numpy_helper

from edge_stpm.common.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

MAX_OPSET = 17

# onnx-tensorrt 8.6-GA docs/operators.md, rows marked supported: operator → supported data types.
TRT86_OPS: dict[str, str] = {
    "Abs": "FP32 FP16 INT32", "Acos": "FP32 FP16", "Acosh": "FP32 FP16", "Add": "FP32 FP16 INT32", "And": "BOOL",
    "ArgMax": "FP32 FP16 INT32", "ArgMin": "FP32 FP16 INT32", "Asin": "FP32 FP16", "Asinh": "FP32 FP16",
    "Atan": "FP32 FP16", "Atanh": "FP32 FP16", "AveragePool": "FP32 FP16 INT8 INT32",
    "BatchNormalization": "FP32 FP16", "Cast": "FP32 FP16 INT32 INT8 UINT8 BOOL", "Ceil": "FP32 FP16",
    "Celu": "FP32 FP16", "Clip": "FP32 FP16 INT8", "Concat": "FP32 FP16 INT32 INT8 BOOL",
    "Constant": "FP32 FP16 INT32 INT8 BOOL", "ConstantOfShape": "FP32", "Conv": "FP32 FP16 INT8",
    "ConvTranspose": "FP32 FP16 INT8", "Cos": "FP32 FP16", "Cosh": "FP32 FP16", "CumSum": "FP32 FP16",
    "DepthToSpace": "FP32 FP16 INT32", "DequantizeLinear": "INT8", "Div": "FP32 FP16 INT32", "Dropout": "FP32 FP16",
    "Einsum": "FP32 FP16", "Elu": "FP32 FP16 INT8", "Equal": "FP32 FP16 INT32", "Erf": "FP32 FP16",
    "Exp": "FP32 FP16", "Expand": "FP32 FP16 INT32 BOOL", "EyeLike": "FP32 FP16 INT32 BOOL",
    "Flatten": "FP32 FP16 INT32 BOOL", "Floor": "FP32 FP16", "GRU": "FP32 FP16",
    "Gather": "FP32 FP16 INT8 INT32 BOOL", "GatherElements": "FP32 FP16 INT8 INT32 BOOL",
    "GatherND": "FP32 FP16 INT8 INT32 BOOL", "Gemm": "FP32 FP16 INT8", "GlobalAveragePool": "FP32 FP16 INT8",
    "GlobalLpPool": "FP32 FP16 INT8", "GlobalMaxPool": "FP32 FP16 INT8", "Greater": "FP32 FP16 INT32",
    "GreaterOrEqual": "FP32 FP16 INT32", "GridSample": "FP32 FP16", "GroupNormalization": "FP32 FP16",
    "HardSigmoid": "FP32 FP16 INT8", "HardSwish": "FP32 FP16 INT8", "Identity": "FP32 FP16 INT32 INT8 BOOL",
    "If": "FP32 FP16 INT32 BOOL", "ImageScaler": "FP32 FP16", "InstanceNormalization": "FP32 FP16",
    "IsInf": "FP32 FP16", "IsNaN": "FP32 FP16 INT32", "LRN": "FP32 FP16", "LSTM": "FP32 FP16",
    "LayerNormalization": "FP32 FP16", "LeakyRelu": "FP32 FP16 INT8", "Less": "FP32 FP16 INT32",
    "LessOrEqual": "FP32 FP16 INT32", "Log": "FP32 FP16", "LogSoftmax": "FP32 FP16", "Loop": "FP32 FP16 INT32 BOOL",
    "LpNormalization": "FP32 FP16", "LpPool": "FP32 FP16 INT8", "MatMul": "FP32 FP16", "Max": "FP32 FP16 INT32",
    "MaxPool": "FP32 FP16 INT8", "Mean": "FP32 FP16 INT32", "MeanVarianceNormalization": "FP32 FP16",
    "Min": "FP32 FP16 INT32", "Mod": "FP32 FP16 INT32", "Mul": "FP32 FP16 INT32", "Neg": "FP32 FP16 INT32",
    "NonMaxSuppression": "FP32 FP16", "NonZero": "FP32 FP16", "Not": "BOOL", "OneHot": "FP32 FP16 INT32 BOOL",
    "Or": "BOOL", "PRelu": "FP32 FP16 INT8", "Pad": "FP32 FP16 INT8 INT32", "ParametricSoftplus": "FP32 FP16 INT8",
    "Pow": "FP32 FP16", "QuantizeLinear": "FP32 FP16", "RNN": "FP32 FP16", "RandomNormal": "FP32 FP16",
    "RandomNormalLike": "FP32 FP16", "RandomUniform": "FP32 FP16", "RandomUniformLike": "FP32 FP16",
    "Range": "FP32 FP16 INT32", "Reciprocal": "FP32 FP16", "ReduceL1": "FP32 FP16", "ReduceL2": "FP32 FP16",
    "ReduceLogSum": "FP32 FP16", "ReduceLogSumExp": "FP32 FP16", "ReduceMax": "FP32 FP16", "ReduceMean": "FP32 FP16",
    "ReduceMin": "FP32 FP16", "ReduceProd": "FP32 FP16", "ReduceSum": "FP32 FP16", "ReduceSumSquare": "FP32 FP16",
    "Relu": "FP32 FP16 INT8", "Reshape": "FP32 FP16 INT32 INT8 BOOL", "Resize": "FP32 FP16",
    "ReverseSequence": "FP32 FP16 INT32 INT8 BOOL", "RoiAlign": "FP32 FP16", "Round": "FP32 FP16 INT8",
    "ScaledTanh": "FP32 FP16 INT8", "Scan": "FP32 FP16", "Scatter": "FP32 FP16 INT8 INT32",
    "ScatterElements": "FP32 FP16 INT8 INT32", "ScatterND": "FP32 FP16 INT8 INT32", "Selu": "FP32 FP16 INT8",
    "Shape": "FP32 FP16 INT32 INT8 BOOL", "Shrink": "FP32 FP16 INT32", "Sigmoid": "FP32 FP16 INT8",
    "Sign": "FP32 FP16 INT8 INT32", "Sin": "FP32 FP16", "Sinh": "FP32 FP16", "Size": "FP32 FP16 INT32 INT8 BOOL",
    "Slice": "FP32 FP16 INT32 INT8 BOOL", "Softmax": "FP32 FP16", "Softplus": "FP32 FP16 INT8",
    "Softsign": "FP32 FP16 INT8", "SpaceToDepth": "FP32 FP16 INT32", "Split": "FP32 FP16 INT32 BOOL",
    "Sqrt": "FP32 FP16", "Squeeze": "FP32 FP16 INT32 INT8 BOOL", "Sub": "FP32 FP16 INT32", "Sum": "FP32 FP16 INT32",
    "Tan": "FP32 FP16", "Tanh": "FP32 FP16 INT8", "ThresholdedRelu": "FP32 FP16 INT8",
    "Tile": "FP32 FP16 INT32 BOOL", "TopK": "FP32 FP16 INT32", "Transpose": "FP32 FP16 INT32 INT8 BOOL",
    "Trilu": "FP32 FP16 INT32 INT8 BOOL", "Unsqueeze": "FP32 FP16 INT32 INT8 BOOL", "Upsample": "FP32 FP16",
    "Where": "FP32 FP16 INT32 BOOL", "Xor": "BOOL",
}

_TYPE_CODES: dict[int, str] = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.INT32: "INT32",
               TensorProto.INT64: "INT32", TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8",
               TensorProto.BOOL: "BOOL", TensorProto.DOUBLE: "FP32"}
# INT64 and DOUBLE are cast down to INT32 / FLOAT by the parser (operators.md), so they count as those.

RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORD_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
CONSTANT_INPUTS = {"Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,), "ReduceSum": (1,), "CumSum": (1,),
                   "Resize": (1, 2, 3), "Pad": (1, 2), "TopK": (1,)}
TOPK_MAX_K = 3840  # TensorRT's ITopKLayer: K ≤ 3840


@dataclass(frozen=True)
class Violation:
    """One broken rule: the node (name and operator), the rule's short name, and what is wrong."""

    node: str
    op: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"node {self.node or '?'} ({self.op}): [{self.rule}] {self.message}"


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor name: inputs, outputs, initializers, Constant outputs and inferred values."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # a graph that cannot be inferred is still checked with what it declares
        inferred = model
    g = inferred.graph
    out: dict[str, int] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            out[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        out[t.name] = t.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t.data_type
    return out


def _constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    g = model.graph
    consts = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    return consts


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def check_model(model: onnx.ModelProto) -> list[Violation]:
    """Every TensorRT-parser rule the graph breaks (empty list: the graph is TensorRT-ready)."""
    g = model.graph
    found = _graph_rules(model)
    types = _types(model)
    consts = _constants(model)
    io_names = {v.name for v in g.input} | {v.name for v in g.output}
    for n in g.node:
        found += _node_rules(n, types, consts, io_names)
    return found


def _graph_rules(model: onnx.ModelProto) -> list[Violation]:
    """The rules of the graph as a whole: opset, operator domains, static input shapes, no uint8 constants."""
    g = model.graph
    found: list[Violation] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset > MAX_OPSET:
        found.append(Violation("(graph)", "opset", "opset",
                               f"ONNX opset {opset} is above {MAX_OPSET}, the newest TensorRT 8.6 parses; "
                               "export at opset 17"))
    for o in model.opset_import:
        if o.domain not in ("", "ai.onnx"):
            found.append(Violation("(graph)", o.domain, "domain",
                                   f"operator domain {o.domain!r} is not parsed by TensorRT without plugins"))
    for v in g.input:
        dims = v.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            found.append(Violation(v.name, "input", "static-shape",
                                   "input has a dynamic dimension; edge-stpm engines are built without "
                                   "optimization profiles"))
    for t in g.initializer:
        if t.data_type == TensorProto.UINT8:
            found.append(Violation(t.name, "initializer", "uint8-io-only",
                                   "uint8 constant: TensorRT takes UINT8 only at network inputs and outputs"))
    return found


def _node_rules(n: onnx.NodeProto, types: dict[str, int], consts: dict[str, onnx.TensorProto],
                io_names: set[str]) -> list[Violation]:
    """The rules one node of the default domain breaks, in a fixed order (operator, then each rule below)."""
    where = n.name or (n.output[0] if n.output else "?")
    if n.domain not in ("", "ai.onnx"):
        return []
    if n.op_type not in TRT86_OPS:
        return [Violation(where, n.op_type, "operator",
                          f"{n.op_type} is not in TensorRT 8.6's ONNX operator support matrix")]
    allowed = set(TRT86_OPS[n.op_type].split())
    found = _uint8_outputs(n, where, types, io_names)
    found += _input_types(n, where, types, allowed)
    found += _constant_operands(n, where, consts)
    if n.op_type == "Resize":
        found += _resize_modes(n, where)
    if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
        found += _check_qdq(n, where, types, consts)
    if n.op_type == "TopK" and len(n.input) > 1 and n.input[1] in consts:
        found += _topk(n, where, consts)
    if n.op_type in ("MaxPool",) and len(n.output) > 1 and n.output[1]:
        found.append(Violation(where, n.op_type, "attribute", "MaxPool's Indices output is not supported"))
    return found


def _uint8_outputs(n: onnx.NodeProto, where: str, types: dict[str, int], io_names: set[str]) -> list[Violation]:
    found = []
    for name in n.output:
        t = types.get(name)
        if t == TensorProto.UINT8 and name not in io_names:
            found.append(Violation(where, n.op_type, "uint8-io-only",
                                   f"outputs uint8 tensor {name!r}: TensorRT does not support UINT8 types for "
                                   "intermediate tensors (cast the uint8 input to float first)"))
    return found


def _input_types(n: onnx.NodeProto, where: str, types: dict[str, int], allowed: set[str]) -> list[Violation]:
    found = []
    for i, name in enumerate(n.input):
        if not name:
            continue
        t = types.get(name)
        code = _TYPE_CODES.get(t) if t is not None else None
        if n.op_type == "DequantizeLinear":
            continue  # its data type is the Q/DQ rule's (below)
        if n.op_type in ("QuantizeLinear", "Shape", "Reshape", "Resize", "Slice", "Squeeze",
                         "Unsqueeze", "Expand", "ReduceSum", "Pad", "Gather", "Clip"):
            if i > 0:
                continue  # index / shape / scale operands: checked by the Q/DQ and constant rules
        if code is not None and code not in allowed and not (code == "UINT8" and n.op_type == "Cast"):
            found.append(Violation(where, n.op_type, "data-type",
                                   f"input {name!r} is {TensorProto.DataType.Name(t)}; TensorRT 8.6's {n.op_type} "
                                   f"takes {', '.join(sorted(allowed))}"))
    return found


def _constant_operands(n: onnx.NodeProto, where: str, consts: dict[str, onnx.TensorProto]) -> list[Violation]:
    found = []
    for i in CONSTANT_INPUTS.get(n.op_type, ()):
        if i < len(n.input) and n.input[i] and n.input[i] not in consts:
            found.append(Violation(where, n.op_type, "constant-operand",
                                   f"operand {i} ({n.input[i]!r}) must be a constant (initializer) for TensorRT"))
    return found


def _resize_modes(n: onnx.NodeProto, where: str) -> list[Violation]:
    found = []
    mode = _attr(n, "mode", "nearest")
    coord = _attr(n, "coordinate_transformation_mode", "half_pixel")
    if mode not in RESIZE_MODES:
        found.append(Violation(where, n.op_type, "resize-mode", f"mode {mode!r}; TensorRT supports nearest and linear"))
    if coord not in RESIZE_COORD_MODES:
        found.append(Violation(where, n.op_type, "resize-mode",
                               f"coordinate_transformation_mode {coord!r} is not supported"))
    return found


def _topk(n: onnx.NodeProto, where: str, consts: dict[str, onnx.TensorProto]) -> list[Violation]:
    k = int(numpy_helper.to_array(consts[n.input[1]]).reshape(-1)[0])
    if k > TOPK_MAX_K:
        return [Violation(where, n.op_type, "topk-k", f"K = {k}: TensorRT's TopK takes K up to {TOPK_MAX_K} "
                          "(a smaller --score-top or input size)")]
    return []


def _check_qdq(n: onnx.NodeProto, where: str, types: dict[str, int],
               consts: dict[str, onnx.TensorProto]) -> list[Violation]:
    out = []
    zp = n.input[2] if len(n.input) > 2 and n.input[2] else None
    scale = consts.get(n.input[1]) if len(n.input) > 1 else None
    if scale is None:
        out.append(Violation(where, n.op_type, "qdq-scale", "scale must be a constant"))
    else:
        s = numpy_helper.to_array(scale)
        if s.size > 1 and n.op_type == "QuantizeLinear" and n.input[0] not in consts:
            out.append(Violation(where, n.op_type, "qdq-per-tensor-activation",
                                 "activations must be quantized per tensor (one scale); per-channel is for weights"))
        if (s <= 0).any():
            out.append(Violation(where, n.op_type, "qdq-scale", "scales must be positive"))
    if zp is None:
        if n.op_type == "QuantizeLinear":
            out.append(Violation(where, n.op_type, "qdq-int8",
                                 "no zero-point: QuantizeLinear then produces UINT8; TensorRT needs INT8 (give an "
                                 "int8 zero-point 0)"))
    else:
        z = consts.get(zp)
        if z is None:
            out.append(Violation(where, n.op_type, "qdq-zero-point", "zero-point must be a constant"))
        else:
            if z.data_type != TensorProto.INT8:
                out.append(Violation(where, n.op_type, "qdq-int8",
                                     f"zero-point is {TensorProto.DataType.Name(z.data_type)}; TensorRT 8.6 "
                                     "quantizes to INT8 only"))
            if numpy_helper.to_array(z).any():
                out.append(Violation(where, n.op_type, "qdq-zero-point",
                                     "zero-point must be 0 (symmetric quantization)"))
    if n.op_type == "DequantizeLinear":
        t = types.get(n.input[0])
        if t is not None and t != TensorProto.INT8:
            out.append(Violation(where, n.op_type, "qdq-int8",
                                 f"dequantizes {TensorProto.DataType.Name(t)} data ({n.input[0]!r}); TensorRT's "
                                 "DequantizeLinear "
                                 "takes INT8 only (8.6; 10.x adds FP8/INT4) - e.g. no int32 bias quantization"))
    return out


def check_file(path: Path) -> list[Violation]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise UserError(f"cannot read ONNX file {path}: corrupt or not ONNX ({type(exc).__name__})") from None
    return check_model(model)


def print_checks(out: Console, graphs: list[Path]) -> int:
    """``edge-stpm check-graph``: one ok line per graph that passes, one line per broken rule of one that does not;
    returns how many graphs broke a rule."""
    bad = 0
    for g in graphs:
        found = check_file(g)
        if not found:
            out.print(f"{g}: ok — TensorRT-ready (TensorRT 8.6 parser rules)", highlight=False)
        for v in found:
            out.print(f"{g}: {v}", highlight=False, soft_wrap=True, markup=False)
        bad += bool(found)
    return bad


def require_trt_ready(model: onnx.ModelProto, what: str) -> None:
    """UserError naming the first broken rules (node and rule) if TensorRT's parser would refuse ``model``."""
    found = check_model(model)
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise UserError(f"{what} would be refused by TensorRT's ONNX parser, not written: "
                        + "; ".join(str(v) for v in found[:3]) + more)
