"""ONNX Runtime's per-node profile of one exported graph (2 threads, 60 runs after 10 warm-up on one random input):
milliseconds per run by op type and for the costliest nodes. Addendum 19 (RULE_R4.md) started from it.

    python3 benchmarks/r4/profile_graph.py BUNDLE/model_fp32.onnx > profile.txt
"""
from __future__ import annotations

import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main(path: str, runs: int = 60) -> int:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in i.shape]
    u8 = "uint8" in i.type
    x = (np.random.default_rng(0).random(shape) * (255 if u8 else 1)).astype(np.uint8 if u8 else np.float32)
    for _ in range(10 + runs):
        s.run(None, {i.name: x})
    events = json.loads(Path(s.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    cutoff = starts[10]  # the warm-up runs are left out
    node: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= cutoff:
            node[e["args"]["op_name"] + " " + e["name"].removesuffix("_kernel_time")] += e["dur"]
    per_run = {k: v / runs / 1000 for k, v in node.items()}
    by_op: collections.Counter[str] = collections.Counter()
    for k, v in per_run.items():
        by_op[k.split()[0]] += v
    print(f"{path}: {sum(per_run.values()):.2f} ms per run in nodes (onnxruntime {ort.__version__}, 2 threads, "
          f"{runs} runs)")
    for k, v in by_op.most_common(10):
        print(f"  {k:24s} {v:6.2f} ms")
    print("costliest nodes:")
    for k, v in collections.Counter(per_run).most_common(8):
        print(f"  {k[:80]:80s} {v:6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
