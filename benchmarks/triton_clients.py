"""Many cameras, one server: K client processes sharing one Triton server (Python-backend model, dynamic batching
on) against K independent local processes (ONNX Runtime each), same bundle, same images, batch 1 per request.

Each process inspects N frames back to back (a camera that always has a frame); reported: total frames/s over all
processes, per-request latency p50/p99 (client side), and from Triton's own /metrics the queue time and the
average batch size its dynamic batcher formed (requests / executions). The server is the tritonserver binary of the
nvidia-pytriton wheel (.ci/fetch_triton.sh), CPU only, on loopback: on one CPU the server competes with its clients
for the same cores, so this measures the serving overhead and batching, not a GPU server's gain.

usage: python benchmarks/triton_clients.py BUNDLE [--clients 4] [--frames 200] [--out benchmarks/results/triton]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def worker(model: str, n: int, seed: int, q: "mp.Queue") -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from edge_stpm.runtime.backends.select import open_backend

    b = open_backend(Path(model), threads=1, verbose=False)
    size = b.image_size
    x = np.random.default_rng(seed).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    for _ in range(3):
        b.infer_any(x)
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        b.infer_any(x)
        lat.append((time.perf_counter() - t) * 1e3)
    q.put({"seconds": time.perf_counter() - t0, "latency_ms": lat})
    b.close()


def fleet(model: str, k: int, n: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(model, n, i, q)) for i in range(k)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    res = [q.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    lat = np.concatenate([r["latency_ms"] for r in res])
    slowest = max(r["seconds"] for r in res)
    return {"clients": k, "frames": k * n, "frames_per_s": k * n / slowest, "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p99": float(np.percentile(lat, 99)), "wall_s_incl_start": wall}


def scrape(port: int, model: str) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    def metric(name: str) -> float:
        m = re.search(rf'^{name}{{[^}}]*model="{model}"[^}}]*}} ([0-9.e+]+)$', text, re.M)
        return float(m.group(1)) if m else float("nan")
    req, execs = metric("nv_inference_request_success"), metric("nv_inference_exec_count")
    return {"requests": req, "executions": execs, "avg_batch": req / execs if execs else None,
            "queue_us_per_request": metric("nv_inference_queue_duration_us") / req if req else None,
            "compute_infer_us_per_execution": metric("nv_inference_compute_infer_duration_us") / execs if execs else None}


def main() -> None:
    from helpers.line_parts import TRITON_ENV, TritonServer, triton_missing

    from edge_stpm.runtime.triton_repo.writer import write_repository

    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/triton"))
    a = ap.parse_args()
    why = triton_missing()
    if why:
        sys.exit(f"error: {why}")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    graph = a.bundle / "model_fp32.onnx"
    res: dict = {"machine": f"{cpu}, {os.cpu_count()} cores", "bundle": str(a.bundle), "frames_per_client": a.frames}
    res["local"] = fleet(str(graph), a.clients, a.frames)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_repository(a.bundle, repo, max_batch=8, queue_delay_us=2000, instances=1, env=TRITON_ENV,
                         threads=os.cpu_count() or 1)
        srv = TritonServer(repo, "edge_stpm", Path(tmp) / "server.log").start()
        try:
            res["triton"] = fleet(srv.url, a.clients, a.frames) | {"server": scrape(srv.metrics, "edge_stpm")}
        finally:
            srv.stop()
    res["ratio_fps_triton_over_local"] = res["triton"]["frames_per_s"] / res["local"]["frames_per_s"]
    a.out.mkdir(parents=True, exist_ok=True)
    tmpf = a.out / "triton_clients.json.tmp"
    tmpf.write_text(json.dumps(res, indent=1))
    tmpf.replace(a.out / "triton_clients.json")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
