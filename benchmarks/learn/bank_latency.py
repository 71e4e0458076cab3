"""Latency of memory bundles' FP32 graphs in one process: ONNX Runtime, batch 1, median of N runs each, bundles
interleaved (the rule of benchmarks/results/learn/drift/RULE.md addendums 2 and 4: a bigger bank costs the line at every
part).

    nice -n 0 python3 benchmarks/learn/bank_latency.py BASE_BUNDLE OTHER_BUNDLE [...] [--runs 100] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from edge_stpm.runtime.backends.onnxruntime_backend import OnnxBackend

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", type=Path, nargs="+")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    backs = [OnnxBackend(b / "model_fp32.onnx", a.threads) for b in a.bundles]
    size = backs[0].metadata["image_size"]
    x = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    times: list[list[float]] = [[] for _ in backs]
    for b in backs:  # warm-up
        for _ in range(5):
            b.infer_any(x)
    for _ in range(a.runs):
        for i, b in enumerate(backs):
            t = time.perf_counter()
            b.infer_any(x)
            times[i].append(time.perf_counter() - t)
    med = [float(np.median(t)) * 1000 for t in times]
    out = {"loadavg": list(os.getloadavg()), "runs": a.runs, "threads": a.threads, "bundles": [
        {"bundle": str(b), "entries": json.loads((b / "fit.json").read_text())["memory"]["entries"],
         "median_ms": m, "ratio_to_first": m / med[0]} for b, m in zip(a.bundles, med, strict=True)]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
