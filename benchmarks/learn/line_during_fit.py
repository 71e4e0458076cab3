"""The line keeps its pace while the box learns (issue 40): the camera loop's verdict latency (p50 / p99) and frames/s
with nothing else running, then the same loop while the station's fit job (``runtime/learn/jobs.FitJob``, in the
same process, as the web app runs it) fits N good parts at a given niceness.

    python3 benchmarks/learn/line_during_fit.py --model BUNDLE --pack PACK [--parts 200] [--nice 10,19]
    python3 benchmarks/learn/line_during_fit.py --model BUNDLE --pack PACK --update DATASET --frames 6000 --nice 10

The loop is free-running (frames as fast as it can: the harshest case for sharing the CPU) over magnetic tile's test
images, headless, with the model BUNDLE. Prints a JSON record and a Markdown table; the rule (written before the
run, results/learn/line_during_fit.md): the default niceness keeps the verdict p99 within 1.5× of idle.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "magnetic_tile"


def loop(model: Path, frames: int) -> dict[str, Any]:
    from edge_stpm.runtime.inspector import Inspector
    from edge_stpm.runtime.loop.pipeline import RunOptions, run
    from edge_stpm.runtime.loop.sources import open_source

    insp = Inspector.load(model, "onnxruntime")
    try:
        s = run(insp, open_source(str(DATA / "test" / "good"), loop=True), RunOptions(headless=True,
                                                                                      max_frames=frames))
    finally:
        insp.close()
    v = s.latency_ms["verdict"]
    return {"frames": s.frames, "fps": round(s.fps, 2), "verdict_p50_ms": round(v["p50"], 2),
            "verdict_p99_ms": round(v["p99"], 2)}


def during_fit(a: argparse.Namespace, nice: int, parts: Path, work: Path) -> dict[str, Any]:
    from edge_stpm.runtime.learn.jobs import FitJob

    job = FitJob(work / f"fit{nice}", nice=nice)
    t0 = time.perf_counter()
    if a.update is not None:  # the web app's "update with reviewed good parts" on the live model, default method
        job.start_update("bench", a.model, a.update, "bench")
    else:
        job.start("bench", a.pack, parts, "bench")
    line = loop(a.model, a.frames)
    covered = job.status()["state"] == "running"
    assert job.thread is not None
    job.thread.join()
    st = job.status()
    if st["state"] != "done":
        raise SystemExit(f"the fit ended {st['state']}: {st.get('error')}")
    return {"nice": nice, "line": line, "fit_running_all_loop": covered, "fit_wall_s": round(time.perf_counter() - t0, 1),
            "fit_seconds": st["card"]["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--pack", type=Path, required=True)
    p.add_argument("--parts", type=int, default=200)
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--nice", default="10,19")
    p.add_argument("--update", type=Path, default=None,
                   help="a dataset folder of reviewed good parts: run the update job on --model instead of a fit")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="line-during-fit-"))
    parts = work / "parts" / "train" / "good"
    parts.mkdir(parents=True)
    for f in sorted((DATA / "train" / "good").iterdir())[: a.parts]:
        (parts / f.name).symlink_to(f.resolve())
    rec: dict[str, Any] = {"cpu": os.cpu_count(), "load_start": os.getloadavg()[0], "parts": a.parts}
    try:
        loop(a.model, 50)  # warm the page cache and the model
        rec["idle"] = loop(a.model, a.frames)
        rec["runs"] = [during_fit(a, int(n), work / "parts", work) for n in a.nice.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rec["load_end"] = os.getloadavg()[0]
    print(json.dumps(rec, indent=1))
    i = rec["idle"]
    print("\n| line | frames/s | verdict p50 ms | verdict p99 ms | p99 / idle | fit wall s (line running) |")
    print("|---|---|---|---|---|---|")
    print(f"| idle | {i['fps']} | {i['verdict_p50_ms']} | {i['verdict_p99_ms']} | 1.00 | — |")
    for r in rec["runs"]:
        ln = r["line"]
        print(f"| {'update' if a.update else 'fit'} at nice {r['nice']}{'' if r['fit_running_all_loop'] else ' (fit ended first)'} | {ln['fps']} | "
              f"{ln['verdict_p50_ms']} | {ln['verdict_p99_ms']} | {ln['verdict_p99_ms'] / i['verdict_p99_ms']:.2f} | "
              f"{r['fit_wall_s']} |")


if __name__ == "__main__":
    main()
