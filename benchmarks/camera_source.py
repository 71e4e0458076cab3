"""The Basler source on pylon's camera emulator (PYLON_CAMEMU), 1024×1040 (the emulator's full sensor):

- conversion cost per frame to the loop's BGR: Mono8 and BayerRG8 with OpenCV (what the source uses) against pylon's
  own ImageFormatConverter (BGR8packed out);
- software trigger → frame in the loop's hands (fire, wait, retrieve, convert), N triggers, p50/p99;
- free-run: frames/s the source delivers to a reader that takes every frame, and what it dropped.

usage: PYLON_CAMEMU=2 python benchmarks/camera_source.py [--n 1000] [--out benchmarks/results/camera]
Medians from one run; name the machine in the table you keep (this script prints the CPU model).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("PYLON_CAMEMU", "2")

import numpy as np


def pct(v: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(v), q))


def conversion(n: int) -> dict:
    from pypylon import pylon

    from edge_stpm.runtime.loop.pixels import to_bgr

    cam = pylon.InstantCamera(pylon.TlFactory.GetInstance().CreateFirstDevice())
    cam.Open()
    out = {}
    conv = pylon.ImageFormatConverter()
    conv.OutputPixelFormat = pylon.PixelType_BGR8packed
    for fmt in ("Mono8", "BayerRG8"):
        cam.PixelFormat.Value = fmt
        cam.StartGrabbingMax(n)
        ocv, pyl = [], []
        while cam.IsGrabbing():
            r = cam.RetrieveResult(5000, pylon.TimeoutHandling_ThrowException)
            if r.GrabSucceeded():
                a = r.GetArray()
                t0 = time.perf_counter()
                b1 = to_bgr(a, fmt)
                t1 = time.perf_counter()
                b2 = conv.Convert(r).GetArray()
                t2 = time.perf_counter()
                ocv.append((t1 - t0) * 1e3)
                pyl.append((t2 - t1) * 1e3)
                same = b1.shape == b2.shape
            r.Release()
        out[fmt] = {"opencv_ms_p50": statistics.median(ocv), "pylon_converter_ms_p50": statistics.median(pyl),
                    "frames": len(ocv), "same_shape": same}
    cam.Close()
    return out


def triggered(n: int) -> dict:
    from edge_stpm.runtime.loop.sources import open_source

    src = open_source("basler://0815-0000?trigger=software")
    src.externally_triggered = True  # fire by hand: time each trigger → frame
    try:
        ms, read_ms = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            assert src.software_trigger()
            f = src.read(5.0)
            ms.append((time.perf_counter() - t0) * 1e3)
            read_ms.append(f.read_ms)
        st = src.stats()
    finally:
        src.close()
    return {"n": n, "trigger_to_frame_ms_p50": pct(ms, 50), "trigger_to_frame_ms_p99": pct(ms, 99),
            "convert_ms_p50": pct(read_ms, 50), "missed": st["missed"], "failed_buffers": st["failed_buffers"]}


def free_run(seconds: float) -> dict:
    from edge_stpm.runtime.loop.sources import open_source

    src = open_source("basler://0815-0001")
    try:
        t0, n = time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            n += src.read(2.0) is not None
        dt = time.monotonic() - t0
        st = src.stats()
    finally:
        src.close()
    return {"seconds": dt, "frames_read": n, "fps_read": n / dt, "dropped": st["dropped"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/camera"))
    a = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    res = {"machine": f"{cpu}, {os.cpu_count()} cores", "size": "1024x1040",
           "conversion": conversion(200), "software_trigger": triggered(a.n), "free_run": free_run(5.0)}
    a.out.mkdir(parents=True, exist_ok=True)
    tmp = a.out / "camera_source.json.tmp"
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(a.out / "camera_source.json")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
