"""The TensorRT-parser lint: real exports pass; deliberately bad graphs fail with the node and the rule named."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edge_stpm.cli import app
from edge_stpm.common.errors import UserError
from edge_stpm.contract.trt_rules import check_model, require_trt_ready


def graph(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


IMG = helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 8, 8, 3])
OUT = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])


def rules(model: onnx.ModelProto) -> set[tuple[str, str]]:
    return {(v.node, v.rule) for v in check_model(model)}


def test_cast_first_passes_transpose_on_uint8_fails() -> None:
    good = graph([helper.make_node("Cast", ["image"], ["f"], name="cast", to=TensorProto.FLOAT),
                  helper.make_node("Transpose", ["f"], ["y"], name="tr", perm=[0, 3, 1, 2])], [IMG], [OUT])
    assert check_model(good) == []
    bad = graph([helper.make_node("Transpose", ["image"], ["t"], name="tr", perm=[0, 3, 1, 2]),
                 helper.make_node("Cast", ["t"], ["y"], name="cast", to=TensorProto.FLOAT)], [IMG], [OUT])
    assert ("tr", "uint8-io-only") in rules(bad)
    with pytest.raises(UserError, match=r"node tr \(Transpose\): \[uint8-io-only\]"):
        require_trt_ready(bad, "test graph")


def _qdq(zp_dtype: np.dtype, zp_value: int, dq_data_dtype: np.dtype) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(zp_value, zp_dtype), "zp"),
             numpy_helper.from_array(np.arange(4, dtype=dq_data_dtype).reshape(1, 4), "bias_q"),
             numpy_helper.from_array(np.array(0, dq_data_dtype), "zp2")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"], name="dq"),
             helper.make_node("DequantizeLinear", ["bias_q", "s", "zp2"], ["b"], name="bias_dq"),
             helper.make_node("Add", ["d", "b"], ["y"], name="add")]
    return graph(nodes, [x], [y], inits)


def test_qdq_rules() -> None:
    assert check_model(_qdq(np.int8, 0, np.int8)) == []
    r = rules(_qdq(np.int8, 0, np.int32))                 # onnxruntime's default int32 bias quantization
    assert ("bias_dq", "qdq-int8") in r
    r = rules(_qdq(np.int8, 3, np.int8))                  # asymmetric
    assert ("q", "qdq-zero-point") in r and ("dq", "qdq-zero-point") in r
    r = rules(_qdq(np.uint8, 0, np.int8))                 # uint8 quantization
    assert ("q", "qdq-int8") in r


def test_operator_opset_and_resize_rules() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])
    sizes = numpy_helper.from_array(np.array([1, 1, 8, 8], np.int64), "sizes")
    cubic = graph([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="up", mode="cubic")], [x], [y], [sizes])
    assert ("up", "resize-mode") in rules(cubic)
    linear = graph([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="up", mode="linear")], [x], [y], [sizes])
    assert check_model(linear) == []
    assert ("(graph)", "opset") in rules(graph([helper.make_node("Relu", ["x"], ["y"], name="r")], [x], [x.__class__(name="y", type=x.type)], opset=19))
    unsupported = graph([helper.make_node("Det", ["x"], ["y"], name="det")], [x], [y])
    assert ("det", "operator") in rules(unsupported)
    dyn = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])
    assert ("x", "static-shape") in rules(graph([helper.make_node("Relu", ["x"], ["y"], name="r")], [dyn], [y]))


def test_real_export_passes_and_check_graph_command(exported: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["check-graph", *[str(exported / f"model_{p}.onnx") for p in ("fp32", "fp16", "int8")]])
    assert res.exit_code == 0, res.output
    assert res.output.count("TensorRT-ready") == 3
    bad = _qdq(np.int8, 0, np.int32)
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    res = runner.invoke(app, ["check-graph", str(tmp_path / "bad.onnx")])
    assert res.exit_code == 1 and "node bias_dq (DequantizeLinear): [qdq-int8]" in res.output.replace("\n", " "), res.output


def test_topk_image_score_k_limit() -> None:
    """The top-% image score exports as TopK with a constant K: TensorRT's TopK takes K ≤ 3840, so a 640² map's
    top 1 % (4096 pixels) must be refused and 3840 accepted."""
    x = helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 640 * 640])
    vals = helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, None])
    idx = helper.make_tensor_value_info("i", TensorProto.INT64, [1, None])
    for k, ok in ((3840, True), (4096, False)):
        kk = numpy_helper.from_array(np.array([k], np.int64), "k")
        m = graph([helper.make_node("TopK", ["m", "k"], ["v", "i"], name="top", axis=1)], [x], [vals, idx], [kk])
        assert (("top", "topk-k") in rules(m)) is not ok, k
    dyn = graph([helper.make_node("TopK", ["m", "kin"], ["v", "i"], name="top", axis=1)],
                [x, helper.make_tensor_value_info("kin", TensorProto.INT64, [1])], [vals, idx])
    assert ("top", "constant-operand") in rules(dyn)
