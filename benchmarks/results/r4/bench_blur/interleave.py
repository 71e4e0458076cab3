"""The three graphs (STPM, memory σ 0, memory σ 1 input blur) in one process, interleaved call by call: ONNX Runtime
FP32, batch 1, 2 threads, 300 rounds after 30 warm-up rounds; median ms per graph and the ratios."""
import json, sys, time
import numpy as np, onnxruntime as ort
names = ("stpm", "mem0", "mem1")
opts = ort.SessionOptions(); opts.intra_op_num_threads = 2; opts.inter_op_num_threads = 1
sess = {n: ort.InferenceSession(f"/tmp/bench_r5/{n}/model_fp32.onnx", opts, providers=["CPUExecutionProvider"]) for n in names}
x = np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
inp = {n: s.get_inputs()[0].name for n, s in sess.items()}
t = {n: [] for n in names}
for r in range(330):
    for n in (names if r % 2 else names[::-1]):
        t0 = time.perf_counter(); sess[n].run(None, {inp[n]: x}); dt = (time.perf_counter() - t0) * 1e3
        if r >= 30: t[n].append(dt)
med = {n: float(np.median(v)) for n, v in t.items()}
out = {"median_ms": med, "vs_stpm": {n: med[n] / med["stpm"] for n in names}, "blur_cost_ms": med["mem1"] - med["mem0"],
       "rounds": 300, "warmup": 30, "threads": 2}
print(json.dumps(out, indent=1))
json.dump(out, open(sys.argv[1], "w"), indent=1)
