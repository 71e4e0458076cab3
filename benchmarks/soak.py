"""A long headless `edge-stpm run` on a looping 640×480 video with every output on — recording (segments), NG
snapshots, event log, inspection record, MQTT through the outbox to a real mosquitto on loopback, Modbus TCP and
OPC UA servers, the HTTP view with a viewer that watches the stream for 5 s of every 30 — sampled every 30 s:
resident memory, open file descriptors and threads of the box process, frames from /metrics.

    python3 benchmarks/soak.py BUNDLE VIDEO SECONDS OUT_DIR [--nice 19] [--threads 1]

Writes OUT_DIR/soak.json (samples, the run's summary, the SQLite integrity checks) and prints the first and last
sample. The run ends by SIGTERM after SECONDS (as a service manager stops it)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.line_parts import broker, free_port  # noqa: E402


def video_640x480(src: str, out: Path) -> Path:
    cap, wr = cv2.VideoCapture(src), None
    while (got := cap.read())[0]:
        f = cv2.resize(got[1], (640, 480), interpolation=cv2.INTER_LINEAR)
        if wr is None:
            wr = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
        wr.write(f)
    assert wr is not None, f"no frames in {src}"
    wr.release()
    return out


def sample(pid: int, http: str, t0: float) -> dict:
    st = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    frames = None
    try:
        text = urllib.request.urlopen(f"{http}/metrics", timeout=5).read().decode()
        frames = next(float(x.split()[-1]) for x in text.splitlines() if x.startswith("edge_stpm_frames_total"))
    except (OSError, StopIteration):
        pass
    return {"t_s": round(time.monotonic() - t0, 1), "rss_mb": int(st["VmRSS"].split()[0]) / 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(st["Threads"]), "frames": frames}


def watch(http: str, seconds: float) -> int:
    """Read the MJPEG stream for ``seconds``; returns bytes read."""
    n, end = 0, time.monotonic() + seconds
    try:
        with urllib.request.urlopen(f"{http}/stream.mjpg", timeout=10) as r:
            while time.monotonic() < end:
                n += len(r.read(65536))
    except OSError:
        pass
    return n


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle"), ap.add_argument("video"), ap.add_argument("seconds", type=float), ap.add_argument("out")
    ap.add_argument("--nice", type=int, default=19)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    video = video_640x480(a.video, work / "video640.avi")
    with broker(work) as b:
        port = free_port()
        http = f"http://127.0.0.1:{port}"
        cmd = ["nice", "-n", str(a.nice), sys.executable, "-m", "edge_stpm.cli", "run", "--model", a.bundle,
               "--source", str(video), "--loop", "--headless", "--threads", str(a.threads),
               "--record", str(work / "rec" / "soak.mkv"), "--save-anomalies", str(work / "ng"),
               "--events", str(work / "events.jsonl"), "--history-db", str(work / "history.db"),
               "--mqtt", f"mqtt://127.0.0.1:{b.port}", "--mqtt-outbox", str(work / "outbox.db"),
               "--modbus", f"127.0.0.1:{free_port()}", "--opcua", f"127.0.0.1:{free_port()}",
               "--http", f"127.0.0.1:{port}", "--summary-json", str(work / "summary.json")]
        log = open(work / "run.log", "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        pid = p.pid  # nice execs the box: same process
        t0 = time.monotonic()
        samples = []
        due = t0 + 20  # model loaded, servers up
        while time.monotonic() - t0 < a.seconds and p.poll() is None:
            time.sleep(max(0.0, due - time.monotonic()))
            due += 30
            samples.append(sample(pid, http, t0) | {"stream_bytes": watch(http, 5.0)})
            print(json.dumps(samples[-1]), flush=True)
        p.send_signal(signal.SIGTERM) if p.poll() is None else None
        rc = p.wait(timeout=120)
        log.close()
    summary = json.loads((work / "summary.json").read_text()) if (work / "summary.json").is_file() else None
    segments = sorted((work / "rec").glob("soak*.mkv"))
    result = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "command": " ".join(cmd), "rc": rc, "samples": samples,
              "record_rows": sqlite3.connect(work / "history.db").execute("SELECT COUNT(*) FROM inspections").fetchone()[0],
              "integrity": {"history": integrity(work / "history.db"), "outbox": integrity(work / "outbox.db")},
              "outbox_left": sqlite3.connect(work / "outbox.db").execute("SELECT COUNT(*) FROM outbox").fetchone()[0],
              "recording_segments": len(segments), "leftover_parts": len(list((work / "rec").glob(".*part*"))),
              "events": sum(1 for _ in open(work / "events.jsonl")) if (work / "events.jsonl").exists() else 0,
              "summary": {k: summary[k] for k in ("frames", "ng_frames", "fps", "dropped", "failed_frames", "end_reason",
                                                  "rss_mb", "latency_ms", "sinks", "error")} if summary else None,
              "log_tail": (work / "run.log").read_text()[-2000:]}
    tmp = out / ".soak.json.part"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out / "soak.json")
    print(json.dumps({k: result[k] for k in ("rc", "record_rows", "integrity", "outbox_left", "recording_segments",
                                             "leftover_parts", "events")}))
    print("first", samples[0] if samples else None, "\nlast", samples[-1] if samples else None)


if __name__ == "__main__":
    main()
