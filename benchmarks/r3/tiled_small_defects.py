"""Small defects on large frames (RULE_R3.md addendum 3): the procedural parts at 768² — their crack is 2 px wide
and ~80 px long whatever the frame size, scratch / spot / missing scale with the frame — the memory head at 256² on
the whole frame against the same head with ``--tiles 3x3``. Per defect: image / pixel AUROC and recall at the
stored threshold (``edge-stpm evaluate``), the fit's seconds, and each exported FP32 bundle's latency per 768² frame
through the runtime ``Inspector`` on ONNX Runtime (median of 30 frames after 5 warm-up). Synthetic: it shows what
the tiled fit does for a small defect, it chooses no default.

    python benchmarks/r3/tiled_small_defects.py OUT_DIR [SIZE] [TILES]
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def sh(*args: str) -> None:
    subprocess.run(["edge-stpm", *args, "--quiet"], check=True, stdout=subprocess.DEVNULL)


def latency_ms(bundle: Path, frames: list[np.ndarray]) -> float:
    from edge_stpm.runtime.inspector import Inspector

    insp = Inspector.load(bundle, backend="onnxruntime")
    for f in frames[:5]:
        insp.inspect(f)
    times = []
    for f in frames[5:35]:
        t0 = time.perf_counter()
        insp.inspect(f)
        times.append(time.perf_counter() - t0)
    insp.close()
    return 1e3 * float(np.median(times))


def main() -> int:
    import cv2

    from edge_stpm.training.synth import SynthConfig, generate

    out = Path(sys.argv[1])
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 768
    grid = sys.argv[3] if len(sys.argv) > 3 else "3x3"
    data = out / "data"
    if not (data / "synth.json").is_file():
        generate(data, SynthConfig(size=size, n_train=60, n_test_good=20, n_test_defect=15, video_frames=10, seed=0))
    frames = [cv2.imread(str(p)) for p in sorted((data / "test").glob("*/*.png"))[:35]]
    rows = {}
    for name, extra in (("whole frame 256²", []), (f"tiles {grid} at 256²", ["--tiles", grid])):
        run, rep, bundle = out / f"run_{len(extra)}", out / f"report_{len(extra)}", out / f"bundle_{len(extra)}"
        t0 = time.perf_counter()
        sh("train", "--data", str(data), "--out", str(run), "--backbone", "mobilenet_v2", "--threads", "2", *extra)
        fit_s = time.perf_counter() - t0
        sh("evaluate", "--checkpoint", str(run / "model.pt"), "--data", str(data), "--out", str(rep))
        sh("export", "--checkpoint", str(run / "model.pt"), "--out", str(bundle), "--precision", "fp32")
        r = json.loads((rep / "report.json").read_text())
        rows[name] = {"fit_seconds": fit_s, "image_auroc": r["overall"]["image_auroc"],
                      "pixel_auroc": r["overall"]["pixel_auroc"], "aupro": r["overall"]["aupro"],
                      "metrics_at": r["metrics_at"],
                      "per_defect": {d: {"image_auroc": b["image_auroc"], "pixel_auroc": b["pixel_auroc"]}
                                     for d, b in r["per_defect"].items()},
                      "recall_at_threshold": r["at_stored_threshold"]["recall"],
                      "precision_at_threshold": r["at_stored_threshold"]["precision"],
                      "ms_per_frame_onnxruntime_fp32": latency_ms(bundle, frames)}
        print(name, json.dumps(rows[name]), flush=True)
    (out / "tiled_small_defects.json").write_text(json.dumps({"frame": size, "grid": grid, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
