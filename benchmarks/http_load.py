"""Loop FPS with no HTTP viewers vs 20 concurrent MJPEG viewers (+ one that never reads), loopback only, bounded.

    python3 benchmarks/http_load.py BUNDLE VIDEO_DIR_OR_FILE [SECONDS=30] [VIEWERS=20]

Each run: `edge-stpm run --headless --http 127.0.0.1:0` on the source for SECONDS, then SIGTERM; the run summary
gives frames and FPS. Prints a Markdown table (machine, both runs, ratio)."""
from __future__ import annotations

import json
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def one(bundle: str, source: str, seconds: float, viewers: int) -> dict:
    tmp = Path(tempfile.mkdtemp())
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--model", bundle, "--source", source,
                          "--headless", "--http", "127.0.0.1:0", "--summary-json", str(tmp / "s.json")],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    base = re.search(r"(http://127\.0\.0\.1:\d+/)", p.stdout.readline()).group(1)
    stop = threading.Event()
    got = [0] * viewers

    def view(i: int) -> None:
        try:
            with urllib.request.urlopen(base + "stream.mjpg", timeout=10) as r:
                while not stop.is_set():
                    if r.readline().startswith(b"--frame"):
                        got[i] += 1
        except Exception:
            pass

    threads = [threading.Thread(target=view, args=(i,), daemon=True) for i in range(viewers)]
    stalled = None
    if viewers:
        stalled = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1].strip("/"))))
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    for t in threads:
        t.start()
    time.sleep(seconds)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    stop.set()
    if stalled:
        stalled.close()
    s = json.loads((tmp / "s.json").read_text())
    return {"viewers": viewers, "frames": s["frames"], "fps": s["fps"], "stream_frames_per_viewer": (sum(got) / viewers) if viewers else 0}


def main() -> int:
    bundle, source = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    viewers = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    a = one(bundle, source, seconds, 0)
    b = one(bundle, source, seconds, viewers)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"# HTTP viewers vs loop FPS — {cpu}, {len(__import__('os').sched_getaffinity(0))} cores, {time.strftime('%Y-%m-%d')}\n")
    print("| viewers | frames | loop FPS | MJPEG frames per viewer |\n|---|---|---|---|")
    for r in (a, b):
        print(f"| {r['viewers']}{' + 1 stalled' if r['viewers'] else ''} | {r['frames']} | {r['fps']:.1f} | {r['stream_frames_per_viewer']:.0f} |")
    print(f"\nratio {b['fps'] / a['fps']:.3f} (FPS with viewers / without), {seconds:g} s each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
