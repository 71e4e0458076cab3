"""For a person with TensorRT (desktop GPU or Jetson): build FP32/FP16/INT8 engines from one bundle, check each
against ONNX Runtime on the same images, bench them, and write ONE results file to send back.

    python3 benchmarks/trt_check.py BUNDLE [--images DIR] [--out trt_check_results.json]

Checks per engine (against ONNX Runtime CPU running the bundle's FP32 graph, and the graph of the same precision):
map relative L2, score max relative error, verdict agreement at the bundle's threshold. Nothing is faked: every
number comes from TensorRT running on this machine; where a step fails, its error is recorded.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--images", type=Path, help="Folder of images of the part (default: 32 seeded synthetic frames).")
    ap.add_argument("--out", type=Path, default=Path("trt_check_results.json"))
    args = ap.parse_args()

    from edge_stpm.contract.artifacts import onnx_path
    from edge_stpm.bench import machine
    from edge_stpm.common.images import fit_image, list_images, read_image
    from edge_stpm.training.export.engine_build import build_into_bundle
    from edge_stpm.contract.trt_rules import check_file
    from edge_stpm.runtime.backends.onnxruntime_backend import OnnxBackend
    from edge_stpm.runtime.backends.tensorrt_backend import TensorRTBackend

    res: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "bundle": str(args.bundle),
                 "python": platform.python_version(), "graphs": {}, "engines": {}}
    ref = OnnxBackend(onnx_path(args.bundle, "fp32"), allow_gpu=False)
    size, fit, thr = ref.image_size, ref.metadata["fit"], float(ref.metadata["thresholds"]["image"])
    if args.images:
        imgs = np.stack([fit_image(read_image(p), size, fit) for p in list_images(args.images)[:64]])
    else:
        imgs = np.random.default_rng(0).integers(0, 256, (32, size, size, 3), dtype=np.uint8)
    ref_maps, ref_scores = ref.infer_any(imgs)
    for prec in ("fp32", "fp16", "int8"):
        g = onnx_path(args.bundle, prec)
        res["graphs"][prec] = {"exists": g.is_file(), "trt_rules": [str(v) for v in check_file(g)] if g.is_file() else None}
    for prec in ("fp32", "fp16", "int8"):
        entry: dict = {}
        res["engines"][prec] = entry
        try:
            t0 = time.perf_counter()
            md, path = build_into_bundle(args.bundle, prec)
            entry |= {"path": str(path), "build_seconds": time.perf_counter() - t0, "metadata": md}
            eng = TensorRTBackend(path)
            maps, scores = eng.infer_any(imgs)
            eng.close()
            same = OnnxBackend(onnx_path(args.bundle, prec), allow_gpu=False).infer_any(imgs) if onnx_path(args.bundle, prec).is_file() else None
            rel = lambda a, b: float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))  # noqa: E731
            entry["vs_onnxruntime_fp32"] = {"map_rel_l2": rel(maps, ref_maps),
                                            "score_max_rel_err": float(np.max(np.abs(scores - ref_scores) / np.abs(ref_scores))),
                                            "verdict_agreement": float(np.mean((scores >= thr) == (ref_scores >= thr)))}
            if same is not None:
                entry["vs_onnxruntime_same_precision"] = {"map_rel_l2": rel(maps, same[0]),
                                                          "score_max_rel_err": float(np.max(np.abs(scores - same[1]) / np.abs(same[1])))}
        except BaseException as exc:  # noqa: BLE001 - every failure is part of the report
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-3000:]
    bench_dir = args.out.with_name(args.out.stem + "_bench")
    bench_json = bench_dir / "bench.json"
    r = subprocess.run([sys.executable, "-m", "edge_stpm.cli", "bench", "--model", str(args.bundle), "--backend",
                        "tensorrt,onnxruntime", "--precision", "fp32,fp16,int8", "--batch", "1", "--out", str(bench_dir),
                        "--quiet"], capture_output=True, text=True)
    res["bench"] = json.loads(bench_json.read_text()) if bench_json.is_file() else {"error": r.stderr[-3000:]}
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"wrote {args.out}: send this file back (it holds the machine, versions, parity and speed)")
    for prec, e in res["engines"].items():
        print(prec, e.get("error") or e.get("vs_onnxruntime_fp32"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
