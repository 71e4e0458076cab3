"""PLC cycle time over Modbus TCP: a real pymodbus client drives N trigger → results ready → ack cycles against
``edge-stpm run --trigger plc`` (image folder, ONNX Runtime); the box's own share (trigger seen → results ready,
from the run summary) against the model's own median latency measured just before on the same machine.

usage: python benchmarks/plc_cycles.py MODEL IMAGE_FOLDER [N] [OUT.json] [POLL_MS] [modbus|opcua]

POLL_MS (default 1): the client's pause between status reads, as a PLC's scan cycle.
"""
from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.line_parts import OPCUA_USER, free_port, modbus_cycles, opcua_cycles  # noqa: E402


def main() -> None:
    model, folder = Path(sys.argv[1]), Path(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    out = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    poll_ms = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
    protocol = sys.argv[6] if len(sys.argv) > 6 else "modbus"
    from edge_stpm.runtime.inspector import Inspector

    insp = Inspector.load(model, "onnxruntime")
    x = np.random.default_rng(0).integers(0, 256, (1, insp.size, insp.size, 3), dtype=np.uint8)
    for _ in range(10):
        insp.backend.infer(x)
    t = []
    for _ in range(100):
        t0 = time.perf_counter()
        insp.backend.infer(x)
        t.append((time.perf_counter() - t0) * 1e3)
    model_p50 = statistics.median(t)
    describe = insp.backend.describe()
    insp.close()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--model", str(model), "--source", str(folder),
                              "--headless", "--trigger", "plc", f"--{protocol}", f"127.0.0.1:{port}", "--no-history",
                              "--max-frames", str(n), "--summary-json", f"{tmp}/s.json",
                              *(["--opcua-user", ":".join(OPCUA_USER)] if protocol == "opcua" else [])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        drive = modbus_cycles if protocol == "modbus" else opcua_cycles
        seen, cycles = drive(port, n, p, check_busy=False, poll_s=poll_ms / 1e3)
        p.communicate(timeout=60)
        s = json.loads(Path(f"{tmp}/s.json").read_text())
    box = next(x for x in s["sinks"] if x["sink"] == "plc")
    r = {"backend": describe, "host": socket.gethostname(), "cycles": n, "protocol": protocol, "poll_ms": poll_ms, "model_p50_ms": model_p50,
         "box_cycle_ms": {"p50": box["plc_cycle_ms_p50"], "p99": box["plc_cycle_ms_p99"]},
         "client_cycle_ms": {"p50": float(np.percentile(cycles, 50)), "p99": float(np.percentile(cycles, 99))},
         "box_share_minus_model_p50_ms": box["plc_cycle_ms_p50"] - model_p50}
    print(json.dumps(r, indent=1))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
