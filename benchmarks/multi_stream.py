"""Several streams in one `edge-stpm run` against the same number of separate processes: total frames/s (wall clock
from the first start to the last end, model loading included, as a user sees it) for 2 and 4 streams.

    python3 benchmarks/multi_stream.py BUNDLE VIDEO [REPEAT=10] [OUT.json]

VIDEO is looped REPEAT times into a longer file, every stream reads its own copy of it. Configurations: one process
with one worker and every core for ONNX Runtime (`--workers 1`, the default before 2026-12-02), one process with
default settings (now one worker per core, at most one per source, for several sources), separate processes with default settings (what a user starts),
and separate processes with `--threads 1` each. Prints a Markdown table with the machine."""
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
    while (got := cap.read())[0]:
        frames.append(got[1])
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    for _ in range(repeat):
        for f in frames:
            wr.write(f)
    wr.release()
    return out


def start(bundle: str, sources: list[str], summary: Path, extra: list[str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "edge_stpm.cli", "run", "--model", bundle, "--headless", "--no-history",
            "--summary-json", str(summary), *extra]
    for s in sources:
        args += ["--source", s]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(bundle: str, groups: list[list[str]], tmp: Path, tag: str, extra: list[str]) -> dict:
    """Start one process per group of sources at once; total frames over the wall clock of all of them."""
    t = time.perf_counter()
    procs = [start(bundle, g, tmp / f"{tag}_{i}.json", extra) for i, g in enumerate(groups)]
    for p in procs:
        p.wait()
    wall = time.perf_counter() - t
    ss = [json.loads((tmp / f"{tag}_{i}.json").read_text()) for i in range(len(groups))]
    frames = sum(x["frames"] for x in ss)
    return {"frames": frames, "wall_s": wall, "fps": frames / wall, "loop_fps_sum": sum(x["fps"] for x in ss),
            "infer_ms_p50": sorted(x["ms"]["infer"] for x in ss)[len(ss) // 2]}


def main() -> int:
    bundle, video = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    out = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    cores = len(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for k in (2, 4):
        vids = [str(longer(video, repeat, tmp / f"long{i}.avi")) for i in range(k)]
        for how, groups, extra in (
                ("one process, --workers 1 (1 worker × all threads)", [vids], ["--workers", "1"]),
                (f"one process, default ({min(cores, k)} workers for {k} sources)", [vids], []),
                (f"{k} processes, default", [[v] for v in vids], []),
                (f"{k} processes, --threads 1", [[v] for v in vids], ["--threads", "1"])):
            rows.append({"streams": k, "how": how, **measure(bundle, groups, tmp, f"{k}_{len(rows)}", extra)})
            print(json.dumps(rows[-1]), flush=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    print(f"\n# streams in one process vs separate processes — {cpu}, {cores} cores, {time.strftime('%Y-%m-%d')}\n")
    print(f"Source: {Path(video).name} looped {repeat}× per stream; bundle {Path(bundle).name}; total frames/s over "
          "the wall clock from the first start to the last end (start-up included).\n")
    print("| streams | how | frames | total frames/s | infer ms p50 |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['streams']} | {r['how']} | {r['frames']} | {r['fps']:.1f} | {r['infer_ms_p50']:.1f} |")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name("." + out.name + ".part")
        tmp_out.write_text(json.dumps({"machine": f"{cpu}, {cores} cores", "rows": rows}, indent=1))
        os.replace(tmp_out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
