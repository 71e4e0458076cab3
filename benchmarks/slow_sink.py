"""A sink that sleeps 200 ms per result beside the loop: frame rate and capture → verdict latency with and without
it, runs alternated (ABAB…), medians; the slow sink's drops counted.

    python3 benchmarks/slow_sink.py BUNDLE [REPEATS=3] [FRAMES=300] [OUT.json]

Source: a 640×480 frame that is always fresh (bench's MemorySource), overlay drawn for every frame (as when
recording), ONNX Runtime FP32, default threads, 1 worker."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from edge_stpm.bench import FRAME_SHAPE, _EveryPicture, camera_frame
from edge_stpm.runtime.inspector import Inspector
from edge_stpm.runtime.loop.pipeline import RunOptions, run
from edge_stpm.runtime.loop.sinks.base import Result, Sink
from edge_stpm.runtime.loop.sources import MemorySource


class Sleepy(Sink):
    name, lossless, queue_size = "sleeps-200ms", False, 8

    def take(self, r: Result) -> None:
        time.sleep(0.2)


def once(insp: Inspector, frames: int, slow: bool) -> dict:
    sinks = [_EveryPicture()] + ([Sleepy()] if slow else [])
    s = run(insp, MemorySource([camera_frame(FRAME_SHAPE[1], FRAME_SHAPE[0])], frames),
            RunOptions(headless=True, sinks=sinks))  # type: ignore[arg-type]
    by = {x["sink"]: x for x in s.sinks}
    return {"fps": s.fps, "verdict_p50": s.latency_ms["verdict"]["p50"], "verdict_p99": s.latency_ms["verdict"]["p99"],
            "slow_taken": by.get("sleeps-200ms", {}).get("taken"), "slow_dropped": by.get("sleeps-200ms", {}).get("dropped")}


def main() -> None:
    bundle = Path(sys.argv[1])
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    frames = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    insp = Inspector.load(bundle, "onnxruntime", precision="fp32" if bundle.is_dir() else None, frame_path="host")
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    once(insp, 60, False)  # warm-up
    for _ in range(repeats):
        runs["without"].append(once(insp, frames, False))
        runs["with"].append(once(insp, frames, True))
    insp.close()
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("fps", "verdict_p50", "verdict_p99")} for k, v in runs.items()}
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "frames": frames,
              "runs": runs, "medians": med, "fps_ratio": med["with"]["fps"] / med["without"]["fps"],
              "verdict_p50_delta_ms": med["with"]["verdict_p50"] - med["without"]["verdict_p50"]}
    print(json.dumps({k: result[k] for k in ("medians", "fps_ratio", "verdict_p50_delta_ms")}, indent=1))
    print("slow sink taken/dropped per run:", [(r["slow_taken"], r["slow_dropped"]) for r in runs["with"]])
    if len(sys.argv) > 4:
        out = Path(sys.argv[4])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
