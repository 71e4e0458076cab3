"""Where the PLC trigger cycle goes (issue 29: trigger seen → results ready against the model's own p50; the goal is
≤ +2 ms). The loop runs in this process exactly as `run --trigger plc` builds it (TriggeredSource over an image
folder, PlcState, PlcSink, the record sink) with a PLC thread that triggers, waits for Results Ready and
acknowledges, as the Modbus server's handlers do (the network and pymodbus are left out: their share is the
difference to benchmarks/plc_cycles.py). Timestamps are taken by wrapping the product's own functions, nothing is
changed in it:

  trigger seen ─► frame in hand ─► fit (host) ─► model ─► result built ─► verdict handed on ─► PLC state has it

usage: python benchmarks/plc_cycle_breakdown.py MODEL IMAGE_FOLDER [N] [OUT.json]
"""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def model_p50(insp, n: int = 200) -> float:
    x = np.random.default_rng(0).integers(0, 256, (1, insp.size, insp.size, 3), dtype=np.uint8)
    for _ in range(20):
        insp.backend.infer_any(x)
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        insp.backend.infer_any(x)
        t.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(t))


def main() -> None:
    from edge_stpm.runtime.inspector import Inspector
    from edge_stpm.runtime.loop.pipeline import RunOptions, run
    from edge_stpm.runtime.line.plc import PlcSink, PlcState, TriggeredSource
    from edge_stpm.runtime.loop.sinks.record import RecordSink
    from edge_stpm.runtime.loop.sources import open_source

    model, folder = Path(sys.argv[1]), Path(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    out = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    insp = Inspector.load(model, "onnxruntime", threads=None)
    p50_alone = model_p50(insp)
    marks: dict[int, dict[str, float]] = {}
    state = PlcState()
    src = TriggeredSource(open_source(str(folder), 10.0, True), state)

    read0 = src.read

    def read(timeout: float = 5.0):
        f = read0(timeout)
        if f is not None:
            marks.setdefault(f.trigger_id, {})["frame"] = time.monotonic()
        return f

    src.read = read  # type: ignore[method-assign]
    current: dict[str, int] = {}
    prep0, infer0 = insp.prepare, insp.backend.infer_any

    def prepare(frame):
        marks.setdefault(current["tid"], {}).setdefault("fit0", time.monotonic())
        r = prep0(frame)
        marks[current["tid"]]["fit1"] = time.monotonic()
        return r

    def infer_any(x):
        t0 = time.monotonic()
        r = infer0(x)
        marks[current["tid"]].update(model0=t0, model1=time.monotonic())
        return r

    insp.prepare, insp.backend.infer_any = prepare, infer_any  # type: ignore[method-assign]
    result0 = state.result

    def result(r):
        marks.setdefault(r.trigger_id, {}).update(ready=time.monotonic(), trigger=r.t_capture, verdict=r.t_verdict)
        result0(r)

    state.result = result  # type: ignore[method-assign]
    done = threading.Event()

    def plc() -> None:
        time.sleep(1.0)
        for _ in range(n):
            while not state.trigger_ready:
                time.sleep(0.0005)
            current["tid"] = state.next_trigger
            state.write_command(1)
            while not state.results_ready:
                time.sleep(0.0005)
            state.write_command(2)
            state.write_command(0)
        done.set()

    tmp = Path(tempfile.mkdtemp())
    opts = RunOptions(headless=True, max_frames=n, stop=done,
                      sinks=[PlcSink(state), RecordSink(tmp / "h.db", "x")])
    t = threading.Thread(target=plc, daemon=True)
    t.start()
    run(insp, [src], opts, specs=[str(folder)])
    rows = [m for m in marks.values() if {"trigger", "frame", "fit0", "model1", "verdict", "ready"} <= m.keys()][20:]
    seg = {
        "trigger seen → frame in hand": [m["frame"] - m["trigger"] for m in rows],
        "frame → fit starts (loop)": [m["fit0"] - m["frame"] for m in rows],
        "fit on the host (resize to the model)": [m["fit1"] - m["fit0"] for m in rows],
        "fit → model starts": [m["model0"] - m["fit1"] for m in rows],
        "model (ONNX Runtime, in the loop)": [m["model1"] - m["model0"] for m in rows],
        "model → verdict (result built)": [m["verdict"] - m["model1"] for m in rows],
        "verdict → PLC state (sink thread)": [m["ready"] - m["verdict"] for m in rows],
        "cycle: trigger seen → results ready": [m["ready"] - m["trigger"] for m in rows],
    }
    res = {"model": str(model), "cycles": len(rows), "model_p50_alone_ms": p50_alone,
           "segments_ms": {k: {"p50": float(np.median(v) * 1e3), "p99": float(np.percentile(v, 99) * 1e3)}
                           for k, v in seg.items()}}
    cyc = res["segments_ms"]["cycle: trigger seen → results ready"]["p50"]
    res["over_model_p50_ms"] = cyc - p50_alone
    for k, v in res["segments_ms"].items():
        print(f"{k:40s} p50 {v['p50']:7.3f} ms   p99 {v['p99']:7.3f} ms")
    print(f"model alone p50 {p50_alone:.3f} ms; cycle p50 {cyc:.3f} ms: +{res['over_model_p50_ms']:.3f} ms")
    if out:
        out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
