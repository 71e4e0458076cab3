"""Round 4 addendum 19, the product step's first question: can PyTorch's ONNX exporter write Q8 as TensorRT and ONNX
Runtime want it? A toy head (random bank 512 × 128, 64 query patches): the query through
``torch.fake_quantize_per_tensor_affine`` (int8, zero point 0), the bank as int8 values behind a ``DequantizeLinear``
(a custom ``autograd.Function`` with a ``symbolic``), MatMul, ReduceMin. Prints the exported ops and initializers,
PyTorch against ONNX Runtime, the ops after ONNX Runtime's optimisation and ``contract/trt_rules``' violations.

    python3 benchmarks/r4/q8_export_probe.py
"""
import io
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from edge_stpm.contract import trt_rules  # noqa: E402

torch.manual_seed(0)
D, M, P = 128, 512, 64
bank = torch.randn(M, D)
sb = bank.abs().amax(1) / 127
bq = torch.clamp(torch.round(bank / sb[:, None]), -127, 127)


class DQBank(torch.autograd.Function):
    """int8 values (held as float) × per-entry scale; exported as Cast to INT8 (folded) → DequantizeLinear."""

    @staticmethod
    def forward(ctx, q, s):
        return q * s

    @staticmethod
    def symbolic(g, q, s):
        qi = g.op("Cast", q, to_i=3)  # INT8
        z = g.op("Constant", value_t=torch.zeros(M, dtype=torch.int8))
        return g.op("DequantizeLinear", qi, s, z, axis_i=1)


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bank_q", bq.t().contiguous())
        self.register_buffer("bank_scale", sb.contiguous())
        self.sx = float(bank.abs().max() / 127)

    def forward(self, f):
        fq = torch.fake_quantize_per_tensor_affine(f, self.sx, 0, -128, 127)
        return torch.matmul(fq, DQBank.apply(self.bank_q, self.bank_scale)).amin(2)


def main() -> int:
    h = Head().eval()
    f = torch.randn(1, P, D)
    buf = io.BytesIO()
    torch.onnx.export(h, (f,), buf, opset_version=17, dynamo=False, input_names=["f"])
    m = onnx.load_from_string(buf.getvalue())
    print("exported ops:", [n.op_type for n in m.graph.node])
    print("initializers:", [(i.name, onnx.TensorProto.DataType.Name(i.data_type), list(i.dims))
                            for i in m.graph.initializer])
    out = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"f": f.numpy()})[0]
    ref = h(f).detach().numpy()
    print(f"PyTorch vs ONNX Runtime: max |Δ| {np.abs(out - ref).max():.3g}, mean |value| {np.abs(ref).mean():.3g}")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = "/tmp/q8_export_probe_opt.onnx"
    ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    print("after ONNX Runtime:", [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node])
    print("TensorRT rule violations:", sorted({v.rule for v in trt_rules.check_model(m)}) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
