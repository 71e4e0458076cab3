"""The station under abuse, measured from outside (issue 37's acceptance figures): a real `edge-stpm run --config`
station on a looped video with a record of 2 M rows (288 k in the last 8 h, a busy shift), then

1. the loop's frames/s with no page open against five live pages polling at 2 Hz (`/api/live` + the picture, as the
   Live page does), alternated twice, 20 s each;
2. the process's peak RSS while 20 anonymous clients each announce a 2 GiB body to `/api/login` and `/api/deploy`
   and start sending it, and while an engineer uploads a body at the upload cap (`max_upload_mb`, 64 here);
3. 1,000 bad logins from one address (through the trusted proxy's X-Forwarded-For): the answers, the audit rows they
   left, and the record's 2 M rows still there.

    python benchmarks/station_abuse.py BUNDLE VIDEO OUT.json
"""
from __future__ import annotations

import json
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ENGINEER = {"Authorization": "Bearer engineer-token-bench"}
VIEWER = {"Authorization": "Bearer viewer-token-bench"}


def fill(db: Path, n: int) -> None:
    """``n`` rows 0.1 s apart ending now (the last 8 h hold 288 k)."""
    from edge_stpm.runtime.loop.sinks.record import COLUMNS, connect, iso

    con = connect(db)
    t0 = time.time() - n * 0.1
    for start in range(0, n, 200_000):
        rows = [(f"bench-{i:09d}", t0 + i * 0.1, iso(t0 + i * 0.1), 0, "cam", i, None, "NG" if i % 10 == 0 else "OK",
                 1.0, 0.5 + (i % 10 == 0), 1.0, 1.0, "sha", None, 5.0, None, 0, "r", None)
                for i in range(start, min(n, start + 200_000))]
        with con:
            con.executemany(f"INSERT INTO inspections ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                            rows)
    con.close()


def get(base: str, path: str, headers: dict, timeout: float = 30) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(base + path, headers=headers), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def frames(base: str) -> int:
    return json.loads(get(base, "/status.json", VIEWER)[1])["frames"]


def fps_phase(base: str, pages: int, seconds: float) -> float:
    stop = threading.Event()

    def page() -> None:
        while not stop.is_set():
            get(base, "/api/live", VIEWER)
            get(base, "/api/live/0.jpg", VIEWER)
            stop.wait(0.5)

    threads = [threading.Thread(target=page, daemon=True) for _ in range(pages)]
    for t in threads:
        t.start()
    time.sleep(2.0)  # settle
    f0, t0 = frames(base), time.monotonic()
    time.sleep(seconds)
    f1, t1 = frames(base), time.monotonic()
    stop.set()
    for t in threads:
        t.join()
    return (f1 - f0) / (t1 - t0)


class Peak(threading.Thread):
    def __init__(self, pid: int) -> None:
        import psutil

        super().__init__(daemon=True)
        self.proc, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.05)


def big_body(port: int, path: str, auth: str, seconds: float = 3.0) -> bytes:
    """Announce 2 GiB and send zeros until the server answers or ``seconds`` pass; the first answer line."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n"
                   f"Content-Length: {2 * 2**30}\r\n\r\n").encode())
        s.settimeout(0.05)
        end, zeros = time.monotonic() + seconds, b"\0" * 65536
        while time.monotonic() < end:
            try:
                got = s.recv(200)
                return got.split(b"\r\n")[0]
            except socket.timeout:
                pass
            try:
                s.sendall(zeros)
            except OSError:
                break
        return b"(no answer)"
    finally:
        s.close()


def main() -> int:
    from helpers.line_parts import free_port

    bundle, video, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    tmp = Path(tempfile.mkdtemp())
    db = tmp / "h.db"
    t = time.monotonic()
    fill(db, 2_000_000)
    fill_s = time.monotonic() - t
    port = free_port()
    (tmp / "st.toml").write_text(f'''
[[recipes]]
name = "r"
index = 0
model = "{bundle}"
[[sources]]
spec = "{video}"
[run]
headless = true
loop = true
threads = 1
[history]
db = "{db}"
[http]
bind = "127.0.0.1:{port}"
viewer_token = "viewer-token-bench"
engineer_token = "engineer-token-bench"
trusted_proxies = ["127.0.0.1"]
max_upload_mb = 64
[evidence]
enabled = false
[store]
root = "{tmp / 'models'}"
''')
    proc = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--config", str(tmp / "st.toml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if frames(base) > 50:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(1)
        fps = {"no_page": [], "five_pages_2hz": []}
        for pages in (0, 5, 0, 5):
            fps["five_pages_2hz" if pages else "no_page"].append(round(fps_phase(base, pages, 20.0), 2))
        live_ms = []
        for _ in range(10):
            t0 = time.perf_counter()
            get(base, "/api/live", VIEWER)
            live_ms.append((time.perf_counter() - t0) * 1e3)
        peak = Peak(proc.pid)
        peak.start()
        time.sleep(1.0)
        rss_idle = peak.peak
        answers: list[bytes] = []
        clients = [threading.Thread(target=lambda p=p: answers.append(big_body(port, p, "")))
                   for p in ["/api/login"] * 10 + ["/api/deploy?recipe=r"] * 10]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        rss_anonymous = peak.peak
        t0 = time.monotonic()
        payload = b"\0" * (64 * 2**20 - 1024)
        code, body = 0, b""
        try:
            req = urllib.request.Request(base + "/api/deploy?recipe=r", data=payload, method="POST",
                                         headers=ENGINEER | {"Content-Type": "application/zip"})
            with urllib.request.urlopen(req, timeout=120) as r:
                code, body = r.status, r.read()
        except urllib.error.HTTPError as exc:
            code, body = exc.code, exc.read()
        upload = {"code": code, "answer": body.decode(errors="replace")[:120], "s": round(time.monotonic() - t0, 2)}
        over = big_body(port, "/api/deploy?recipe=r", "Authorization: Bearer engineer-token-bench\r\n")
        peak.stop.set()
        peak.join()
        audit0 = sqlite3.connect(db).execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        codes = []
        for i in range(1000):
            req = urllib.request.Request(base + "/api/login", data=json.dumps({"token": f"guess-{i}"}).encode(),
                                         method="POST", headers={"Content-Type": "application/json",
                                                                 "X-Forwarded-For": "10.7.7.7"})
            try:
                codes.append(urllib.request.urlopen(req, timeout=10).status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
        con = sqlite3.connect(db)
        audit1 = con.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        bench_rows = con.execute("SELECT COUNT(*) FROM inspections WHERE result_id LIKE 'bench-%'").fetchone()[0]
        con.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ratio = statistics.median(fps["five_pages_2hz"]) / statistics.median(fps["no_page"])
    result = {"record_rows": 2_000_000, "fill_s": round(fill_s, 1), "loop_fps": fps, "fps_ratio_pages_vs_none": round(ratio, 3),
              "api_live_ms_median_of_10": round(statistics.median(live_ms), 1),
              "rss_mb": {"before": round(rss_idle / 2**20, 1), "peak_20_anonymous_2gib": round(rss_anonymous / 2**20, 1),
                         "peak_with_engineer_upload_at_cap": round(peak.peak / 2**20, 1)},
              "anonymous_answers": sorted({a.decode(errors="replace") for a in answers}),
              "engineer_upload_64mb": upload, "engineer_2gib_announced": over.decode(errors="replace"),
              "bad_logins": {"n": 1000, "answers": {str(c): codes.count(c) for c in sorted(set(codes))},
                             "audit_rows_added": audit1 - audit0},
              "record_bench_rows_after": bench_rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
