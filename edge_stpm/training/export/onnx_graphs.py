"""FP32 and FP16 ONNX graphs of the inspection pipeline: export, static-shape clean-up, checks, metadata."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import atomic_path
from edge_stpm.contract.artifacts import FRAME_INPUTS, FRAME_OUTPUTS, INPUT_NAME, OUTPUT_NAMES, set_metadata
from edge_stpm.contract.scale import ScoreScale
from edge_stpm.contract.trt_rules import require_trt_ready
from edge_stpm.training.framepath import FramePipeline
from edge_stpm.training.model import InspectionPipeline

OPSET = 17


def pipeline_for(pipe: InspectionPipeline, precision: str) -> InspectionPipeline:
    """A copy of the FP32 pipeline with trunks in the dtype the graph needs (int8 starts from FP32)."""
    p = copy.deepcopy(pipe).float().eval()
    if precision == "fp16":
        p.teacher.half()
        p.student.half()
        p.trunk_dtype = torch.float16
    return p


def export_onnx(pipe: InspectionPipeline, precision: str, batch: int, path: Path, metadata: dict[str, Any]) -> Path:
    """The inspection pipeline (``batch`` model-size images) as a TensorRT-ready ONNX graph."""
    dummy = torch.zeros((batch, pipe.image_size, pipe.image_size, 3), dtype=torch.uint8)
    return _trace(pipeline_for(pipe, "fp16" if precision == "fp16" else "fp32"), (dummy,), [INPUT_NAME],
                  list(OUTPUT_NAMES), path, metadata, f"the {precision.upper()} graph {Path(path).name}")


def export_frame_onnx(pipe: InspectionPipeline, precision: str, frame_hw: tuple[int, int], fit: str, path: Path,
                      metadata: dict[str, Any]) -> Path:
    """The device frame path (``framepath.FramePipeline``) for one camera frame size as an ONNX graph."""
    zero = ScoreScale.of(metadata["thresholds"]).pixel_zero
    module = FramePipeline(pipeline_for(pipe, precision), frame_hw, fit, pixel_zero=zero).eval()
    dummies = (torch.zeros((1, *frame_hw, 3), dtype=torch.uint8), torch.ones(1))
    return _trace(module, dummies, list(FRAME_INPUTS), list(FRAME_OUTPUTS), path, metadata,
                  f"the {precision.upper()} frame graph {Path(path).name}")


def _trace(module: torch.nn.Module, dummies: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str],
           path: Path, metadata: dict[str, Any], what: str) -> Path:
    """Trace to ONNX opset 17 with static shapes, fold shape arithmetic to constants, check, write atomically."""
    with atomic_path(Path(path)) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, dummies, str(tmp), input_names=inputs, output_names=outputs,
                              opset_version=OPSET, dynamo=False, do_constant_folding=True)
        model = onnx.load(str(tmp))
        fold_constants(model)  # static shapes: Resize sizes and pads become initializers
        set_metadata(model, metadata)
        onnx.checker.check_model(model, full_check=True)
        require_trt_ready(model, what)
        onnx.save(model, str(tmp))
    return Path(path)


def fold_constants(model: onnx.ModelProto, max_elements: int = 1 << 16) -> int:
    """Evaluate every node whose inputs are all constants (small shape arithmetic torch's exporter leaves behind,
    e.g. the ``ConstantOfShape → Pad`` of an asymmetric pad, ``Shape`` of a tensor whose shape is static) and store
    its outputs as initializers, so operands TensorRT needs constant are plain initializers. Repeats until nothing
    more folds (a folded pad makes the shapes after it known). Returns the number of nodes folded."""
    total = 0
    for _ in range(8):
        n = _fold_once(model, max_elements)
        total += n
        if not n:
            break
    return total


def _fold_once(model: onnx.ModelProto, max_elements: int) -> int:
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    # graph outputs too: the frame graph resizes its map output back to the frame (a Shape of an output)
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    folded = 0
    for node in list(g.node):
        if node.op_type == "Shape" and node.input[0] in shapes and not node.attribute:
            value = np.array(shapes[node.input[0]], np.int64)
        elif node.op_type == "Constant":
            value = ReferenceEvaluator(helper.make_model(helper.make_graph(
                [node], "c", [], [helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UNDEFINED, None)]),
                opset_imports=model.opset_import)).run(None, {})[0]
        elif node.input and all(i == "" or i in consts for i in node.input) and node.op_type not in ("QuantizeLinear",
                                                                                              "DequantizeLinear"):
            if any(consts[i].size > max_elements for i in node.input if i):
                continue
            inputs = [i for i in node.input if i]
            graph = helper.make_graph([node], "f", [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(
                consts[i].dtype), consts[i].shape) for i in inputs],
                [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output])
            results = ReferenceEvaluator(helper.make_model(graph, opset_imports=model.opset_import)).run(
                None, {i: consts[i] for i in inputs})
            value = results[0] if len(node.output) == 1 else None
            if value is None:
                continue
        else:
            continue
        value = np.asarray(value)
        consts[node.output[0]] = value
        g.initializer.append(numpy_helper.from_array(value, node.output[0]))
        g.node.remove(node)
        folded += 1
    remove_dead_nodes(model)
    return folded


def remove_dead_nodes(model: onnx.ModelProto) -> None:
    """Remove nodes whose outputs nothing uses, and initializers no node reads."""
    g = model.graph
    outputs = {o.name for o in g.output}
    while True:
        used = {i for n in g.node for i in n.input} | outputs
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(init)


def check_file(path: Path) -> None:
    """Full ONNX check of a file; one UserError naming the file if it fails."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # checker raises ValidationError / DecodeError / InferenceError
        raise UserError(f"ONNX check failed for {path}: {str(exc).splitlines()[0][:200]}") from None
