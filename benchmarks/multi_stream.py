"""Several streams in one `edge-stpm run` against the same number of separate processes: total frames/s and the
per-stream end-to-end latency (median ms per frame, from each run's summary).

    python3 benchmarks/multi_stream.py BUNDLE VIDEO [REPEAT=10]   (VIDEO is looped REPEAT times into a longer file)

Prints a Markdown table with the machine; default settings as a user would run them (threads = all cores)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2


def longer(video: str, repeat: int, out: Path) -> Path:
    frames = []
    cap = cv2.VideoCapture(video)
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    for _ in range(repeat):
        for f in frames:
            wr.write(f)
    wr.release()
    return out


def run(bundle: str, sources: list[str], summary: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "edge_stpm.cli", "run", "--model", bundle, "--headless", "--summary-json", str(summary)]
    for s in sources:
        args += ["--source", s]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    bundle, video = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    tmp = Path(tempfile.mkdtemp())
    v = str(longer(video, repeat, tmp / "long.avi"))
    rows = []
    for k in (1, 2, 4):
        t = time.perf_counter()
        run(bundle, [v] * k, tmp / f"one_{k}.json").wait()
        wall = time.perf_counter() - t
        s = json.loads((tmp / f"one_{k}.json").read_text())
        rows.append((k, "one process", s["frames"], s["frames"] / wall, s["ms"]["total"]))
        t = time.perf_counter()
        procs = [run(bundle, [v], tmp / f"sep_{k}_{i}.json") for i in range(k)]
        for p in procs:
            p.wait()
        wall = time.perf_counter() - t
        ss = [json.loads((tmp / f"sep_{k}_{i}.json").read_text()) for i in range(k)]
        frames = sum(x["frames"] for x in ss)
        rows.append((k, f"{k} processes", frames, frames / wall, sorted(x["ms"]["total"] for x in ss)[k // 2]))
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"# streams in one process vs separate processes — {cpu}, {len(os.sched_getaffinity(0))} cores, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print(f"Source: {Path(video).name} looped {repeat}× per stream; bundle {Path(bundle).name}; wall clock includes start-up.\n")
    print("| streams | how | frames | total frames/s | per-stream latency p50 ms/frame |\n|---|---|---|---|---|")
    for k, how, frames, fps, lat in rows:
        print(f"| {k} | {how} | {frames} | {fps:.1f} | {lat:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
