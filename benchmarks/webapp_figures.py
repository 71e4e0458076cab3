"""The web app's figures (issue 31): page and API load time with 100,000 rows in the record; the live page's cost to
the loop (frames/s with a live-page client polling as the page does, against none, in the same run of a file source
played as fast as it goes); evidence disk use per 1,000 NG parts.

    python benchmarks/webapp_figures.py BUNDLE VIDEO OUT.json
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def fill_record(db: Path, n: int, recipe: str) -> None:
    from edge_stpm.runtime.loop.sinks.record import COLUMNS, connect, iso

    con = connect(db)
    t0 = time.time() - n * 0.05
    rows = [(f"bench-{i:09d}", t0 + i * 0.05, iso(t0 + i * 0.05), 0, "cam", i, None, "NG" if i % 10 == 0 else "OK",
             1.0, 0.5 + (i % 10 == 0), 1.0, 1.0, "sha", None, 5.0, None, 0, recipe, None) for i in range(n)]
    with con:
        con.executemany(f"INSERT INTO inspections ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
    con.close()


def timed(url: str, headers: dict, n: int = 5) -> float:
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60).read()
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def main() -> int:
    from helpers.line_parts import free_port

    from edge_stpm.common.bind import parse_bind
    from edge_stpm.runtime.web.live import LiveView
    from edge_stpm.runtime.loop.pipeline import RunOptions, run
    from edge_stpm.runtime.loop.sinks.evidence import EvidencePolicy, EvidenceSink
    from edge_stpm.runtime.loop.sinks.http import HttpPictureSink, HttpVerdictSink
    from edge_stpm.runtime.loop.sinks.record import RecordSink
    from edge_stpm.runtime.loop.sources import open_source
    from edge_stpm.runtime.station.audit import Audit
    from edge_stpm.runtime.station.config import Recipe, Station
    from edge_stpm.runtime.station.control import StationControl
    from edge_stpm.runtime.station.recipes import StationInspector, load_recipes
    from edge_stpm.runtime.station.store import ModelStore
    from edge_stpm.runtime.web.auth import Sessions

    bundle, video, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    tmp = Path(tempfile.mkdtemp())
    db = tmp / "h.db"
    fill_record(db, 100_000, "r")
    r = Recipe(name="r", index=0, model=bundle)
    recipes = load_recipes([r], r, "onnxruntime")
    control = StationControl(recipes, ModelStore(tmp / "m"), Audit(db), "onnxruntime", station=Station(recipes=[r]))
    insp = StationInspector(recipes, control)
    port = free_port()
    view = LiveView(parse_bind(f"127.0.0.1:{port}"), None, {"model": "m", "backend": "onnxruntime", "precision": "fp32"},
                    history=db)
    view.control = control
    view.sessions = Sessions({"engineer": "engineer-token-bench"}, open_viewer=True)
    view.start()
    base, h = f"http://127.0.0.1:{port}", {"Authorization": "Bearer engineer-token-bench"}
    load = {"history_page_ms": timed(base + "/app/history", h), "results_300_ms": timed(base + "/api/results?limit=300", h),
            "results_ng_8h_300_ms": timed(base + "/api/results?since=8h&verdict=NG&limit=300", h),
            "results_csv_10000_ms": timed(base + "/api/results?limit=10000&format=csv", h, 3),
            "audit_ms": timed(base + "/api/audit", h), "health_ms": timed(base + "/api/health", h)}
    fps = {}
    for watched in (False, True, False, True):
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                try:
                    urllib.request.urlopen(urllib.request.Request(base + "/api/live", headers=h), timeout=10).read()
                    urllib.request.urlopen(urllib.request.Request(base + "/api/live/0.jpg", headers=h), timeout=10).read()
                except OSError:
                    pass
                stop.wait(0.7)  # the page's refresh period
        t = threading.Thread(target=poll)
        if watched:
            t.start()
        ev = EvidenceSink(EvidencePolicy(tmp / "ev", ok_every=0), db)
        src = open_source(video, 10.0, True)  # played again: 1,200 frames a run
        opts = RunOptions(headless=True, max_frames=1200, sinks=[RecordSink(db, "sha"), ev])
        opts.http = view
        s = run(insp, [src], opts)
        stop.set()
        if watched:
            t.join()
        fps.setdefault("with_live_page" if watched else "without", []).append(s.fps)
    import sqlite3

    con = sqlite3.connect(str(db))
    n_ng, b_ng = con.execute("SELECT COUNT(*), SUM(bytes) FROM evidence WHERE kind = 'ng'").fetchone()
    ng_results = con.execute("SELECT COUNT(*) FROM inspections WHERE verdict = 'NG' AND result_id NOT LIKE 'bench-%'"
                             ).fetchone()[0]
    con.close()
    view.close()
    insp.close()
    result = {"record_rows": 100_000, "load_ms_median_of_5": load, "loop_fps": fps,
              "evidence": {"ng_items": n_ng, "ng_results": ng_results, "mb_per_1000_ng": (b_ng or 0) / max(1, n_ng) * 1000 / 2**20,
                           "frame": "the source's own frames"}}
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
