"""The camera loop's end-to-end FPS (decode → infer → overlay → record) against the backend's model-only FPS,
measured in one run on one machine.

usage: python benchmarks/loop_fps.py MODEL.onnx VIDEO [FRAMES]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge_stpm.runtime.loop.pipeline import RunOptions, run
from edge_stpm.runtime.loop.sources import open_source
from edge_stpm.bench import time_host
from edge_stpm.runtime.inspector import Inspector


def main() -> None:
    model, video = Path(sys.argv[1]), sys.argv[2]
    frames = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    insp = Inspector.load(model, "onnxruntime")
    x = np.random.default_rng(0).integers(0, 256, (1, insp.size, insp.size, 3), dtype=np.uint8)
    model_ms = statistics.median(time_host(lambda: insp.backend.infer(x), 100, 10))
    with tempfile.TemporaryDirectory() as tmp:
        s = run(insp, open_source(video), RunOptions(headless=True, max_frames=frames, record=Path(tmp) / "r.mp4",
                                                     events=Path(tmp) / "e.jsonl"))
    print(f"backend: {insp.backend.describe()}")
    print(f"| model-only FPS (median of 100) | loop end-to-end FPS ({s.frames} frames, recording) | ratio |")
    print("|---|---|---|")
    print(f"| {1e3 / model_ms:.1f} | {s.fps:.1f} | {s.fps / (1e3 / model_ms):.2f} |")
    print(f"loop medians (ms): read {s.ms['read']:.2f}, infer {s.ms['infer']:.2f}; capture→verdict "
          f"{s.ms['verdict']:.2f}, capture→picture {s.ms.get('picture', 0):.2f}")


if __name__ == "__main__":
    main()
