"""Round 4 addendum 19 (benchmarks/results/accuracy/RULE_R4.md): the memory head's dot product f·m on INT8 values (Q8).

I1p's bank of each seed (``stride4.py --check`` caches it) with each entry quantized symmetric INT8 by its own scale
(max |m_j| / 127) and the query per tensor by one scale fixed at fit time (max |value| over the fitted training
patches / 127, clipped to [−128, 127]); ‖f‖² and ‖m‖² stay FP32: d² = ‖f‖² + ‖m‖² − 2 f̂·m̂. The rest is I1p's
(``bank_cost.run_bank``: σ 4 smoothing, top 2 %, logsigma image threshold, p999 pixel threshold) on ``stride4.py``'s
cached stride-8 features. Records ``S4_Q8_seed{N}.json``; ``--speed`` times the distance graph alone in ONNX Runtime
(today's FP32 against QDQ INT8, one process, interleaved) → ``q8/distance_alone.json``.

    nice -n 19 python3 benchmarks/r4/stride4.py --check --seed N      (I1p and its cached bank, per seed)
    nice -n 19 python3 benchmarks/r4/int8_bank.py --seed N
    python3 benchmarks/r4/int8_bank.py --speed ; python3 benchmarks/r4/int8_bank.py --table
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "r4"))

import bank_cost as bc  # noqa: E402
import common  # noqa: E402
import input_blur as ib  # noqa: E402
import neighbourhood as nb  # noqa: E402
import stride4 as s4  # noqa: E402

from edge_stpm.common.files import write_json, write_text  # noqa: E402
from edge_stpm.runtime.learn import thresholds  # noqa: E402

Q = 127.0


def quantize_rows(bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric INT8 per bank entry: (values as float32 integers, scale per entry)."""
    scale = np.maximum(np.abs(bank).max(axis=1), 1e-12) / Q
    return np.clip(np.round(bank / scale[:, None]), -Q, Q).astype(np.float32), scale.astype(np.float32)


def nearest_q8(sx: float) -> Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``bank_cost.nearest`` with f·m on INT8 values (the integer products are exact in float32: |sum| < 2^24)."""

    def nearest(q: np.ndarray, bank: np.ndarray, bank_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bq, sb = quantize_rows(bank)
        d = np.empty(q.shape[:2], np.float32)
        idx = np.empty(q.shape[:2], np.int64)
        for i in range(len(q)):
            qq = np.clip(np.round(q[i] / sx), -128, 127).astype(np.float32)
            d2 = bank_sq[None, :] - 2.0 * (qq @ bq.T) * (sx * sb[None, :])
            j = d2.argmin(axis=1)
            d[i] = np.sqrt(np.maximum(d2[np.arange(len(j)), j] + (q[i] * q[i]).sum(1), 0.0))
            idx[i] = j
        return d, idx

    return nearest


def candidate(a: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    d = ib.data(a)
    train = np.load(a.cache / "s8_train.npy", mmap_mode="r")
    test = np.load(a.cache / "s8_test.npy", mmap_mode="r")
    val = s4.held_out(a.seed, len(train))
    sx = float(max(np.abs(np.asarray(train[i])).max() for i in np.flatnonzero(~val)) / Q)
    bank = np.load(a.cache / f"bank_I1p_seed{a.seed}.npy")
    bc.GRID = 32
    f = {"labels": d["labels"], "masks": d["masks"], "defects": d["defects"]}
    smooth, k = bc.Smooth(bc.SIGMA, bc.SIZE), thresholds.default_k("memory")
    exact = bc.nearest
    bc.nearest = nearest_q8(sx)
    try:
        out = bc.run_bank("Q8", bank, None, np.asarray(train[val]), np.asarray(test), f, smooth, k,
                          pixel_method="p999")
    finally:
        bc.nearest = exact
    rec = {"name": "Q8", "seed": a.seed, "grid": 32, "input_blur": s4.SIGMA_IN, "pixel_method": "p999",
           "query_scale": sx, "held_out": int(val.sum()), "load": os.getloadavg(), "run": out,
           "seconds": {"all": time.perf_counter() - t0}}
    write_json(s4.KEEP / f"S4_Q8_seed{a.seed}.json", rec)
    return rec


def judge() -> str:
    """Addendum 19's margins against I1p from this harness (3 seeds)."""
    recs = {(n, s): json.loads((s4.KEEP / f"S4_{n}_seed{s}.json").read_text())["run"]["W0"]
            for n in ("I1p", "Q8") for s in (0, 1, 2) if (s4.KEEP / f"S4_{n}_seed{s}.json").exists()}
    if len(recs) < 6:
        return f"- Q8: {len(recs)} of 6 runs (the judgement needs 3 seeds of both)"

    def each(n: str, get) -> np.ndarray:
        return np.array([float(get(recs[(n, s)])) for s in (0, 1, 2)])

    da = each("Q8", lambda w: w["image_auroc"]) - each("I1p", lambda w: w["image_auroc"])
    df = float((each("Q8", lambda w: w["segf1"]["f1"]) - each("I1p", lambda w: w["segf1"]["f1"])).mean())
    dr = float((each("Q8", lambda w: w["recall"]) - each("I1p", lambda w: w["recall"])).mean())
    col = [recs[("Q8", s)]["good_coloured"]["0.5"] for s in (0, 1, 2)]
    checks = [(f"mean image AUROC {da.mean():+.4f} (≥ −0.002)", da.mean() >= -0.002),
              ("per seed " + ", ".join(f"{x:+.4f}" for x in da) + " (each ≥ −0.004)", bool((da >= -0.004).all())),
              (f"mean SegF1 {df:+.4f} (≥ −0.005)", df >= -0.005), (f"mean recall {dr:+.4f} (≥ −0.01)", dr >= -0.01),
              ("coloured median / p90 " + ", ".join(f"{c['median'] * 100:.1f} / {c['p90'] * 100:.1f} %" for c in col)
               + " (≤ 2 / 5 %)", all(c["median"] <= 0.02 and c["p90"] <= 0.05 for c in col))]
    lines = [f"- {text}: {'pass' if ok else 'FAIL'}" for text, ok in checks]
    lead = all(ok for _, ok in checks)
    return "\n".join(lines + [f"- **Q8 {'is a lead' if lead else 'is not a lead'}** (addendum 19)"])


def speed(iters: int = 300) -> dict[str, Any]:
    """The distance graph alone (1 024 patches × I1p seed 0's entries × 128 dims), FP32 as the product builds it today
    against QDQ INT8, in one ONNX Runtime process, 2 threads, called in turn."""
    import onnxruntime as ort
    from onnx import TensorProto as T, helper as H, numpy_helper as N

    cache = Path("/tmp/r4I")
    bank = np.load(cache / "bank_I1p_seed0.npy")
    q = np.ascontiguousarray(np.load(cache / "s8_test.npy", mmap_mode="r")[0].T[None])  # (1, D, P)
    (m, dims), p = bank.shape, q.shape[2]
    sq = (bank * bank).sum(1).astype(np.float32)[None, None]
    tail = [H.make_node("ReduceMin", ["part"], ["mn"], axes=[2], keepdims=0), H.make_node("Mul", ["x", "x"], ["xx"]),
            H.make_node("ReduceSum", ["xx", "ax1"], ["fsq"], keepdims=0), H.make_node("Add", ["mn", "fsq"], ["z"])]

    def model(nodes: list[Any], inits: dict[str, np.ndarray]) -> bytes:
        inits = {**inits, "sq": sq, "ax1": np.array([1])}
        g = H.make_graph(nodes + tail, "d", [H.make_tensor_value_info("x", T.FLOAT, [1, dims, p])],
                         [H.make_tensor_value_info("z", T.FLOAT, [1, p])],
                         [N.from_array(v, k) for k, v in inits.items()])
        return H.make_model(g, opset_imports=[H.make_opsetid("", 17)]).SerializeToString()

    bq, sb = quantize_rows(bank)
    sx = float(json.loads((s4.KEEP / "S4_Q8_seed0.json").read_text())["query_scale"])
    fp32 = model([H.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
                  H.make_node("MatMul", ["xt", "bt"], ["dot"]),
                  H.make_node("Mul", ["dot", "m2"], ["dm"]), H.make_node("Add", ["sq", "dm"], ["part"])],
                 {"bt": bank.T.copy(), "m2": np.array(-2, np.float32)})
    int8 = model([H.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
                  H.make_node("QuantizeLinear", ["xt", "sx", "zx"], ["xq"]),
                  H.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
                  H.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bd"], axis=1),
                  H.make_node("MatMul", ["xd", "bd"], ["part0"]), H.make_node("Add", ["sq", "part0"], ["part"])],
                 {"sx": np.array(sx, np.float32), "zx": np.array(128, np.uint8),
                  "bq": (-bq.T).astype(np.int8).copy(), "sb": 2 * sb, "zb": np.zeros(m, np.int8)})
    # exact, FP32: ‖m‖² folded into the MatMul ([f, 1] against [−2 mᵀ; ‖m‖²]), no full-size Add
    aug = model([H.make_node("Concat", ["x", "one"], ["xa"], axis=1),
                 H.make_node("Transpose", ["xa"], ["xt"], perm=[0, 2, 1]),
                 H.make_node("MatMul", ["xt", "ba"], ["part"])],
                {"one": np.ones((1, 1, p), np.float32),
                 "ba": np.concatenate([-2 * bank.T, sq[0]], 0).astype(np.float32)})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = {k: ort.InferenceSession(v, so, providers=["CPUExecutionProvider"])
            for k, v in (("fp32", fp32), ("int8", int8), ("fp32_folded", aug))}
    outs = {k: s.run(None, {"x": q})[0] for k, s in sess.items()}
    ref = nearest_q8(sx)(q[0].T[None], bank, sq[0, 0])[0][0] ** 2
    t: dict[str, list[float]] = {k: [] for k in sess}
    for i in range(iters + 30):
        for k, s in sess.items():
            t0 = time.perf_counter()
            s.run(None, {"x": q})
            if i >= 30:
                t[k].append(time.perf_counter() - t0)
    med = {k: 1000 * float(np.median(v)) for k, v in t.items()}
    return {"entries": m, "dims": dims, "patches": p, "iters": iters, "ms_median": med,
            "ratio_int8_to_fp32": med["int8"] / med["fp32"], "ratio_folded_to_fp32": med["fp32_folded"] / med["fp32"],
            "fp32_folded_vs_fp32_max_abs_d2": float(np.abs(outs["fp32_folded"] - outs["fp32"]).max()),
            "load_after": os.getloadavg(),
            "int8_vs_harness_max_abs_d2": float(np.abs(outs["int8"][0] - ref).max()),
            "fp32_vs_int8_median_abs_d2": float(np.median(np.abs(outs["int8"] - outs["fp32"]))),
            "ops_int8_after_ort": sorted({n.op_type for n in _optimised(int8).graph.node}),
            "onnxruntime": ort.__version__, "cpu": _cpu()}


def _optimised(model: bytes) -> Any:
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = "/tmp/q8_opt.onnx"
    ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return onnx.load("/tmp/q8_opt.onnx")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main(argv: list[str]) -> int:
    p = common.parser(__doc__)
    p.add_argument("--speed", action="store_true")
    a = p.parse_args(argv)
    if a.speed:
        rec = speed()
        write_json(s4.KEEP / "q8" / "distance_alone.json", rec)
        print(json.dumps(rec, indent=1))
        return 0
    if a.table:
        text = nb.table("Q8").split("\n\n")[0] + "\n\n" + judge() + "\n"
        write_text(s4.KEEP / "Q8_table.md", text)
        print(text)
        return 0
    w = candidate(a)["run"]["W0"]
    print(f"Q8 seed {a.seed}: AUROC {w['image_auroc']:.4f} pixel {w['pixel_auroc']:.4f} SegF1 {w['segf1']['f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
