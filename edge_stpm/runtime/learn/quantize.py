"""INT8 graph: explicit, symmetric Q/DQ (per-channel Conv weights, per-tensor activations) from calibration
images, with onnxruntime's static quantizer; the head (normalise, difference, Resize, product, max) stays FP32."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import atomic_path
from edge_stpm.contract.artifacts import INPUT_NAME, set_metadata
from edge_stpm.contract.trt_rules import require_trt_ready

MIN_CALIB = 20
WARN_CALIB = 100
CALIB_METHODS = ("minmax", "percentile", "entropy")


class ImageBatches:
    """onnxruntime CalibrationDataReader over uint8 images ``(N, H, W, 3)`` in static batches."""

    def __init__(self, images: np.ndarray, batch: int, on_batch: Callable[[int], None] | None = None) -> None:
        self.images, self.batch, self.on_batch, self.i = images, batch, on_batch, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i + self.batch > len(self.images):
            return None
        x = np.ascontiguousarray(self.images[self.i : self.i + self.batch])
        self.i += self.batch
        if self.on_batch:
            self.on_batch(self.batch)
        return {INPUT_NAME: x}

    def rewind(self) -> None:
        self.i = 0


def check_count(n: int) -> str | None:
    """Refuse fewer than MIN_CALIB images; return a warning under WARN_CALIB.

    Why 20: per-tensor activation ranges are set by extremes; with fewer images than about one training
    batch the ranges follow single images and clip ordinary parts of the next ones.
    """
    if n < MIN_CALIB:
        raise UserError(f"only {n} calibration images: INT8 needs at least {MIN_CALIB} (about 300 recommended)")
    if n < WARN_CALIB:
        return f"only {n} calibration images (under {WARN_CALIB}): INT8 ranges may not cover your production images"
    return None


DEFAULT_FLOAT_STAGES = (0,)

# Q/DQ placement for TensorRT, as NVIDIA's Model Optimizer configures onnxruntime's quantizer for INT8 ONNX:
# symmetric int8 (zero-point 0); biases left in float (TensorRT's DequantizeLinear takes INT8 only, so an int32
# bias DQ is refused); weights kept as float initializers followed by a Q→DQ pair; one dedicated Q/DQ pair per
# consumer; no Q/DQ on the outputs of ops TensorRT fuses into the preceding conv (Q/DQ go on the *inputs* of
# quantizable ops, TensorRT propagates them). ``trt_rules`` checks the result before it is written.
TENSORRT_QDQ_OPTIONS = {
    "ActivationSymmetric": True, "WeightSymmetric": True,
    "QuantizeBias": False, "AddQDQPairToWeight": True, "DedicatedQDQPair": True,
    "OpTypesToExcludeOutputQuantization": ["Conv", "Add", "Clip", "Relu", "Mul", "Concat", "MaxPool"],
}


def float_convs(model: onnx.ModelProto, stages: tuple[int, ...]) -> list[str]:
    """Names of the Conv nodes to keep unquantized: those of the given pyramid stages (teacher and student)
    and every Conv of the head (the map smoothing)."""
    return [n.name for n in model.graph.node if n.op_type == "Conv"
            and (any(f"/stages.{s}/" in n.name for s in stages)
                 or not (n.name.startswith("/teacher/") or n.name.startswith("/student/")))]


def quantize_int8(fp32: Path, out: Path, images: np.ndarray, batch: int, metadata: dict[str, Any],
                  cache: Path, method: str = "minmax", on_batch: Callable[[int], None] | None = None,
                  float_stages: tuple[int, ...] = DEFAULT_FLOAT_STAGES) -> dict[str, Any]:
    """Write the Q/DQ INT8 graph of ``fp32`` to ``out``; the tensor ranges go to ``cache`` (JSON, reused when it
    exists so the same graph can be rebuilt exactly). Returns the per-tensor activation scales.

    ``float_stages``: pyramid stages whose convolutions stay in float. Stage 0 (stride 4, full-resolution
    features) by default: on magnetic tile quantizing it cost ~9 points of image AUROC, because the map
    is a small teacher–student difference that independent INT8 noise in both trunks swamps; keeping it
    float brought INT8 within 1 point (see the README).
    """
    if method not in CALIB_METHODS:
        raise UserError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIB_METHODS)}")
    cm = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
          "entropy": CalibrationMethod.Entropy}[method]
    reader = ImageBatches(images, batch, on_batch)
    exclude = float_convs(onnx.load(str(fp32), load_external_data=False), tuple(float_stages))
    logging.getLogger().setLevel(logging.ERROR)
    with atomic_path(Path(out)) as tmp:
        cache_tmp = None if Path(cache).is_file() else Path(cache).with_name(Path(cache).name + ".part")
        if cache_tmp is not None and cache_tmp.exists():
            cache_tmp.unlink()
        try:
            quantize_static(
                str(fp32), str(tmp), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=cm, calibration_cache_path=str(cache if cache_tmp is None else cache_tmp),
                nodes_to_exclude=exclude,
                extra_options=TENSORRT_QDQ_OPTIONS,
            )
            if cache_tmp is not None:
                os.replace(cache_tmp, cache)
        finally:
            if cache_tmp is not None and cache_tmp.exists():
                cache_tmp.unlink()
        model = onnx.load(str(tmp))
        set_metadata(model, metadata)
        onnx.checker.check_model(model, full_check=True)
        require_trt_ready(model, f"the INT8 graph {Path(out).name}")
        onnx.save(model, str(tmp))
    return qdq_summary(onnx.load(str(out))) | {"float_stages": list(float_stages), "float_convs": len(exclude)}


def qdq_summary(model: onnx.ModelProto) -> dict[str, Any]:
    """Count Q/DQ nodes, check they are symmetric int8 (zero-point 0), count int32 (bias) DQ nodes (must be 0 for
    TensorRT), and list activation scales by tensor name."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    zps = [inits[n.input[2]] for n in q + dq if len(n.input) > 2 and n.input[2] in inits]
    weight_q = [n for n in q if n.input[0] in inits]
    scales = {n.input[0]: float(inits[n.input[1]].ravel()[0]) for n in q if n.input[1] in inits and n not in weight_q}
    weight_dq_out = {d.output[0] for w in weight_q for d in dq if d.input[0] == w.output[0]}
    return {
        "quantize_nodes": len(q), "dequantize_nodes": len(dq), "weight_qdq_pairs": len(weight_q),
        "symmetric_int8": all(z.dtype == np.int8 and not z.any() for z in zps),
        "int32_bias_dequantize_nodes": sum(z.dtype == np.int32 for z in zps),
        "weight_quantized_ops": sorted({c.op_type for c in model.graph.node if weight_dq_out & set(c.input)}),
        "activation_scales": scales,
    }
