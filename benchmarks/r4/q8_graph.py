"""Round 4 addendum 19 (RULE_R4.md), reported beside the rule: what Q8 would cost in the whole memory graph.

A benchmark-only rewrite of an exported memory bundle's ``model_fp32.onnx`` (the product does not write it): the
distance MatMul's two inputs go through QDQ — the query per tensor (scale max |bank| / 127: the coreset keeps the
extreme patches, so this stands in for the fitted patches' max), as uint8 with zero point 128 or as int8 with zero
point 0 (the form TensorRT takes), the bank per entry (int8, symmetric) — as ``int8_bank.py`` computes them. Then the
STPM graph, the memory graph and its two rewrites in one ONNX Runtime process, interleaved call by call (2 threads,
300 rounds after 30 warm-up, order reversed every other round, as ``bench_blur/interleave.py``), each rewrite's
TensorRT rule violations (``contract/trt_rules``), and the uint8 rewrite's maps against the FP32 graph on the bundle's
self-test images.

    python3 benchmarks/r4/q8_graph.py --stpm STPM --memory MEMORY --out benchmarks/results/r4/q8/q8_graph.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper as H, numpy_helper as N

BANK = "memory.bank_t"


def rewrite(model: onnx.ModelProto, signed: bool = False) -> onnx.ModelProto:
    """The distance MatMul (``x @ memory.bank_t``) with QDQ on both inputs; everything else unchanged. The query is
    uint8 with zero point 128 (ONNX Runtime's fast x86 path), or with ``signed`` int8 with zero point 0 (what TensorRT
    takes: ``contract/trt_rules``)."""
    g = model.graph
    bank_t = next(N.to_array(i) for i in g.initializer if i.name == BANK)  # (D, M)
    (k, mm) = next((i, n) for i, n in enumerate(g.node) if n.op_type == "MatMul" and n.input[1] == BANK)
    sb = np.maximum(np.abs(bank_t).max(axis=0), 1e-12) / 127.0
    bq = np.clip(np.round(bank_t / sb[None]), -127, 127).astype(np.int8)
    sx = np.float32(np.abs(bank_t).max() / 127.0)
    g.initializer.extend([N.from_array(bq, "q8.bank"), N.from_array(sb.astype(np.float32), "q8.bank_scale"),
                          N.from_array(np.zeros(len(sb), np.int8), "q8.bank_zero"),
                          N.from_array(np.array(sx, np.float32), "q8.query_scale"),
                          N.from_array(np.array(0, np.int8) if signed else np.array(128, np.uint8), "q8.query_zero")])
    nodes = [H.make_node("QuantizeLinear", [mm.input[0], "q8.query_scale", "q8.query_zero"], ["q8.xq"]),
             H.make_node("DequantizeLinear", ["q8.xq", "q8.query_scale", "q8.query_zero"], ["q8.x"]),
             H.make_node("DequantizeLinear", ["q8.bank", "q8.bank_scale", "q8.bank_zero"], ["q8.b"], axis=1),
             H.make_node("MatMul", ["q8.x", "q8.b"], list(mm.output), name=mm.name + "_q8")]
    del g.node[k]
    for i, n in enumerate(nodes):
        g.node.insert(k + i, n)
    keep = [i for i in g.initializer if i.name != BANK]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(model)
    return model


def session(model: bytes | str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def maps(s: ort.InferenceSession, images: list[np.ndarray]) -> np.ndarray:
    name = s.get_inputs()[0].name
    return np.stack([s.run(["anomaly_map"], {name: x[None]})[0][0, 0] for x in images])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stpm", type=Path, required=True)
    p.add_argument("--memory", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=300)
    a = p.parse_args(argv)
    from edge_stpm.contract import trt_rules

    q8 = {k: rewrite(onnx.load(a.memory / "model_fp32.onnx"), signed=k == "memory_q8_s8")
          for k in ("memory_q8", "memory_q8_s8")}
    violations = {k: sorted({v.rule for v in trt_rules.check_model(m)}) for k, m in q8.items()}
    sess = {"stpm": session(str(a.stpm / "model_fp32.onnx")), "memory": session(str(a.memory / "model_fp32.onnx")),
            **{k: session(m.SerializeToString()) for k, m in q8.items()}}
    shape = sess["memory"].get_inputs()[0].shape  # (1, H, W, 3) uint8
    images = [cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (shape[2], shape[1]))
              for f in sorted(a.memory.glob("selftest_*.png"))]
    m32, m8 = maps(sess["memory"], images), maps(sess["memory_q8"], images)
    rel = float(np.linalg.norm(m8 - m32) / np.linalg.norm(m32))
    x = np.random.default_rng(0).integers(0, 256, (1, shape[1], shape[2], 3), dtype=np.uint8)
    names = list(sess)
    inp = {n: s.get_inputs()[0].name for n, s in sess.items()}
    load_before = os.getloadavg()
    t: dict[str, list[float]] = {n: [] for n in names}
    for r in range(a.rounds + 30):
        for n in names if r % 2 else names[::-1]:
            t0 = time.perf_counter()
            sess[n].run(None, {inp[n]: x})
            if r >= 30:
                t[n].append((time.perf_counter() - t0) * 1e3)
    med = {n: float(np.median(v)) for n, v in t.items()}
    out: dict[str, Any] = {"median_ms": med, "vs_stpm": {n: med[n] / med["stpm"] for n in names},
                           "tensorrt_rule_violations": violations, "q8_map_rel_l2_vs_fp32": rel,
                           "q8_map_max_abs_vs_fp32": float(np.abs(m8 - m32).max()),
                           "selftest_images": len(images), "rounds": a.rounds, "warmup": 30, "threads": 2,
                           "load_before": load_before, "load_after": os.getloadavg(), "onnxruntime": ort.__version__}
    print(json.dumps(out, indent=1))
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
