"""Station figures: memory (RSS) with 1, 2 and 4 recipes loaded, each in a fresh process; the recipe changeover on
the trigger path (select a recipe, then inspect: first frame after a change vs frames without one, p50 / p99).

    python benchmarks/station_bench.py BUNDLE_A BUNDLE_B FRAME.png OUT.json [N]

BUNDLE_A and BUNDLE_B: two bundles of the same input size (the recipes alternate between them)."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RSS = """
import json, sys, psutil
from pathlib import Path
from edge_stpm.runtime.station.config import Recipe
from edge_stpm.runtime.station.recipes import load_recipes
n, bundle = int(sys.argv[1]), sys.argv[2]
before = psutil.Process().memory_info().rss
rs = [Recipe(name=f"r{i}", index=i, model=bundle) for i in range(n)]
s = load_recipes(rs, rs[0], "onnxruntime", threads=1) if n else None
print(json.dumps({"recipes": n, "rss_mb": psutil.Process().memory_info().rss / 2**20,
                  "imports_rss_mb": before / 2**20}))
"""


def rss(bundle: str) -> list[dict]:
    out = []
    for n in (0, 1, 2, 4):
        r = subprocess.run([sys.executable, "-c", RSS, str(n), bundle], capture_output=True, text=True, check=True)
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


def changeover(a: str, b: str, frame: np.ndarray, n: int) -> dict:
    from edge_stpm.runtime.station.config import Recipe
    from edge_stpm.runtime.station.recipes import StationInspector, load_recipes

    rs = [Recipe(name="a", index=0, model=a), Recipe(name="b", index=1, model=b)]
    insp = StationInspector(load_recipes(rs, rs[0], "onnxruntime", threads=2))
    for _ in range(20):
        insp.inspect(frame)
    same, change, select = [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        insp.recipes.select(i % 2)
        t1 = time.perf_counter()
        insp.inspect(frame)
        t2 = time.perf_counter()
        insp.inspect(frame)
        t3 = time.perf_counter()
        select.append((t1 - t0) * 1e6)
        change.append((t2 - t1) * 1e3)
        same.append((t3 - t2) * 1e3)
    insp.close()
    pct = lambda v, q: float(np.percentile(v, q))  # noqa: E731
    return {"pairs": n, "select_us": {"p50": pct(select, 50), "p99": pct(select, 99)},
            "inspect_after_change_ms": {"p50": pct(change, 50), "p99": pct(change, 99)},
            "inspect_without_change_ms": {"p50": pct(same, 50), "p99": pct(same, 99)},
            "note": "inspect = the whole host path of one frame (fit, model, score, recipe post-processing); the two "
                    "recipes alternate, so each 'after change' frame runs the other model than the frame before"}


def main() -> int:
    import cv2

    a, b, frame_path, out = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 200
    frame = cv2.imread(frame_path)
    result = {"machine": platform.processor() or platform.machine(), "bundles": [a, b],
              "rss": rss(a), "changeover": changeover(a, b, frame, n)}
    out.write_text(json.dumps(result, indent=1))
    base = result["rss"][0]["rss_mb"]
    print("RSS: " + ", ".join(f"{r['recipes']} recipes {r['rss_mb']:.0f} MB (+{r['rss_mb'] - base:.0f})"
                              for r in result["rss"]))
    c = result["changeover"]
    print(f"changeover: select {c['select_us']['p50']:.1f} / {c['select_us']['p99']:.1f} µs; first frame after a "
          f"change {c['inspect_after_change_ms']['p50']:.2f} / {c['inspect_after_change_ms']['p99']:.2f} ms vs "
          f"{c['inspect_without_change_ms']['p50']:.2f} / {c['inspect_without_change_ms']['p99']:.2f} ms without (p50 / p99)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
