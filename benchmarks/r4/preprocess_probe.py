"""A diagnosis for issue 38 (test labels; not a rule and not a setting): the defaults fitted with ``edge-stpm fit`` on
magnetic tile's train/good after a preprocessing applied at each image's own resolution, then judged on the test
split treated the same way, at the stored thresholds. Probes: ``blur075`` (a Gaussian blur of σ 0.75 px) and
``gamma13`` (a tone curve, γ 1.3). Reuses ``benchmarks/learn/drift_cycle.py``'s helpers (seed 0, the same split).

    nice -n 19 python3 benchmarks/r4/preprocess_probe.py   # writes benchmarks/results/r4/preprocess_probe_seed0.json
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "learn"))
PROBES = {"blur075": (1.0, 0.75), "gamma13": (1.3, 0.0)}  # (gamma, blur sigma px)


def main() -> None:
    import drift_cycle as d

    sys.argv = [sys.argv[0], "--base", "/tmp/learn/seed0/E"]
    a = d.parse()
    keep_drift = d.drift
    out = {}
    for tag, (g, s) in PROBES.items():
        lut = (255.0 * (np.arange(256) / 255.0) ** g).round().astype(np.uint8)
        d.drift = (lambda img, gamma, sigma, lut=lut, s=s:  # type: ignore[misc]
                   cv2.GaussianBlur(cv2.LUT(img, lut), (0, 0), s) if s > 0 else cv2.LUT(img, lut))
        w = Path(f"/tmp/learn/r4/preprocess_{tag}")
        test = d.drifted_test(a.data, w / "test", g, s)
        tr = d.drifted_train(a.data, w / "train", g, s)
        t0 = time.time()
        d.run_update(a, "D3", tr, w / "model")
        r = d.judge(w / "model", test, 2)
        out[tag] = {k: v for k, v in r.items() if k not in ("scores", "labels")} | {"fit_s": time.time() - t0}
        print(tag, out[tag], flush=True)
    d.drift = keep_drift
    (ROOT / "benchmarks" / "results" / "r4" / "preprocess_probe_seed0.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
