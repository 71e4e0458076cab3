"""MQTT results against a real broker (Debian's mosquitto on loopback): a broker stopped for 10 s mid-run and
restarted, a broker unreachable at start, the box killed with SIGKILL and restarted — every result arrives, in
order; the outbox and the record pass SQLite's integrity check."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

from helpers.line_parts import MOSQUITTO, PacedSource, Subscriber, broker
from edge_stpm.runtime.loop.pipeline import RunOptions, run
from edge_stpm.runtime.loop.sinks.mqtt import MqttSink, parse_url
from edge_stpm.runtime.loop.sinks.record import RecordSink
from edge_stpm.common.errors import UserError
from edge_stpm.runtime.inspector import Inspector

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto; "
                                                          ".ci/run installs it)")


def images(synth_dir: Path) -> list:
    return [cv2.imread(str(p)) for p in sorted((synth_dir / "test").glob("*/*.png"))]


def in_order_once(ids: list[str]) -> tuple[list[str], int]:
    """The ids in first-arrival order and how many arrived again (QoS 1 allows a resend after a cut)."""
    seen: dict[str, None] = {}
    for i in ids:
        seen.setdefault(i, None)
    return list(seen), len(ids) - len(seen)


def integrity(path: Path) -> str:
    con = sqlite3.connect(str(path))
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def test_broker_down_for_10_s_mid_run_loses_nothing(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    insp = Inspector.load(exported / "model_fp32.onnx", "onnxruntime")
    with broker(tmp_path) as b:
        sub = Subscriber(b.port)
        time.sleep(0.3)
        mq = MqttSink(f"mqtt://127.0.0.1:{b.port}", "line1/{source}", tmp_path / "outbox.db", "sha", drain_s=30)
        rec = RecordSink(tmp_path / "h.db", "sha")
        n = 900  # 18 s at 50 frames/s
        box: dict = {}
        t = threading.Thread(target=lambda: box.update(s=run(insp, PacedSource(images(synth_dir), n, 50.0),
                                                              RunOptions(headless=True, sinks=[rec, mq]))))
        t.start()
        time.sleep(3.0)
        b.stop()
        time.sleep(10.0)
        depth_while_down = mq.outbox.depth()
        b.start()
        t.join(120)
        ids = sub.wait_for(n, 60)
        sub.close()
    insp.close()
    s = box["s"]
    assert s.frames == n and s.error is None
    once, again = in_order_once(ids)
    con = sqlite3.connect(str(tmp_path / "h.db"))
    recorded = [r[0] for r in con.execute("SELECT result_id FROM inspections ORDER BY id")]
    con.close()
    assert len(recorded) == n
    assert once == recorded, "every result arrived, in the order inspected"
    assert depth_while_down > 100, depth_while_down  # the outbox grew while the broker was away (~500 expected)
    assert again <= 16, again  # QoS 1: at most the window in flight at the cut (16) is sent again
    assert integrity(tmp_path / "outbox.db") == "ok" and integrity(tmp_path / "h.db") == "ok"
    assert sqlite3.connect(str(tmp_path / "outbox.db")).execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def _video(synth_dir: Path, path: Path, n: int) -> Path:
    imgs = images(synth_dir)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (imgs[0].shape[1], imgs[0].shape[0]))
    for i in range(n):
        w.write(imgs[i % len(imgs)])
    w.release()
    return path


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    yield
    while STARTED:
        p = STARTED.pop()
        if p.poll() is None:
            p.kill()
            p.wait(10)


def _run_cli(args: list, env: dict) -> subprocess.Popen:
    STARTED.append(_popen(args, env))
    return STARTED[-1]


def _popen(args: list, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])


def test_sigkill_and_restart_lose_no_committed_result(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    """Killed mid-run: what the outbox had committed is sent after the restart, before the new run's results;
    each run's results arrive as an unbroken prefix of its sequence, in order."""
    video = _video(synth_dir, tmp_path / "long.avi", 1500)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with broker(tmp_path) as b:
        sub = Subscriber(b.port)
        time.sleep(0.3)
        args = ["--model", exported / "model_fp32.onnx", "--source", video, "--headless", "--threads", "1",
                "--mqtt", f"mqtt://127.0.0.1:{b.port}", "--mqtt-outbox", tmp_path / "outbox.db",
                "--history-db", tmp_path / "h.db"]
        p = _run_cli(args, env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(sub.ids()) < 200:
            time.sleep(0.05)
        sub.subscribed.clear()
        b.stop()  # results now pile up in the outbox…
        time.sleep(1.5)
        os.kill(p.pid, signal.SIGKILL)  # …and the box dies with them there
        p.wait(30)
        assert integrity(tmp_path / "outbox.db") == "ok" and integrity(tmp_path / "h.db") == "ok"
        con = sqlite3.connect(str(tmp_path / "outbox.db"))
        left = [r[0] for r in con.execute("SELECT result_id FROM outbox ORDER BY id")]
        con.close()
        assert len(left) > 20, len(left)
        b.start()
        assert sub.subscribed.wait(15), "the test's subscriber is back before the box publishes"
        p = _run_cli(args + ["--max-frames", "300"], env)  # long enough that the backlog drains while it runs
        out, errs = p.communicate(timeout=180)
        assert p.returncode == 0, errs
        ids = sub.wait_for(len(set(sub.ids())) + 1, 5)
        sub.close()
    once, again = in_order_once(ids)
    assert set(left) <= set(once), "every result the outbox held at the kill arrived after the restart"
    runs: dict[str, list[int]] = {}
    for i in once:
        rid, seq = i.rsplit("-", 1)
        runs.setdefault(rid, []).append(int(seq))
    assert len(runs) == 2
    first, second = sorted(runs)
    assert runs[first] == list(range(len(runs[first]))), "the killed run's results: unbroken, in order"
    assert runs[second] == list(range(300))
    assert once.index(f"{second}-{0:09d}") > once.index(left[-1]), "the backlog went out before the new results"
    assert again <= 16


def test_broker_unreachable_at_start_is_one_warning(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    from helpers.line_parts import free_port

    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = _run_cli(["--model", exported / "model_fp32.onnx", "--source", synth_dir / "video.avi", "--headless",
                  "--mqtt", f"mqtt://127.0.0.1:{port}", "--mqtt-outbox", tmp_path / "o.db",
                  "--history-db", tmp_path / "h.db"], env)
    out, errs = p.communicate(timeout=180)
    assert p.returncode == 0, errs
    assert "60 frames" in out
    warnings = [l for l in errs.splitlines() if l.startswith("warning:")]
    # exactly two: the broker is unreachable (said once, not per result), and at the end what stays in the outbox
    assert len(warnings) == 2, errs
    assert "unreachable" in warnings[0] and "60 MQTT results not yet acknowledged stay in" in warnings[1], errs
    assert "Traceback" not in errs
    con = sqlite3.connect(str(tmp_path / "o.db"))
    assert con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 60  # all kept for the next run


def test_bad_broker_urls_and_topics_are_one_line() -> None:
    for bad in ("http://x", "mqtt://", "mqtt://h:99999", "tcp://h:1883"):
        with pytest.raises(UserError, match="--mqtt"):
            parse_url(bad)
    assert parse_url("mqtts://u:p%40ss@broker.local").port == 8883
    from edge_stpm.runtime.loop.sinks.mqtt import check_topic

    for bad in ("a/#", "a/+/b", "", "$SYS/x", "a/{line}"):
        with pytest.raises(UserError, match="--mqtt-topic"):
            check_topic(bad)


def test_results_in_the_record_but_not_in_the_outbox_are_queued_on_restart(tmp_path: Path) -> None:
    """A kill can leave a result in the record (committed) that the MQTT sink had not yet put into the outbox: the
    next start queues exactly those — that run's rows after the last one it queued, in order — and nothing of
    another run."""
    from edge_stpm.runtime.loop.sinks.mqtt import Outbox
    from edge_stpm.runtime.loop.sinks.record import COLUMNS, connect

    rec = connect(tmp_path / "h.db")
    rows = []
    for run_id, n in (("20261202T040000.000000Z", 10), ("20261202T050000.000000Z", 3)):  # the second had no MQTT
        for seq in range(n):
            row = dict.fromkeys(COLUMNS) | {"result_id": f"{run_id}-{seq:09d}", "time": 1.0, "time_iso": "t",
                                            "source": seq % 2, "source_spec": "s", "frame": seq, "verdict": "OK",
                                            "score": 0.5, "normalised_score": 0.5, "image_threshold": 1.0,
                                            "pixel_threshold": 1.0, "model_sha256": "sha", "camera": '{"frame_id": 7}',
                                            "score_scale": "good"}
            rows.append([row[c] for c in COLUMNS])
    with rec:
        rec.executemany(f"INSERT INTO inspections ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
    rec.close()
    box = Outbox(tmp_path / "outbox.db", 1000)
    first = "20261202T040000.000000Z"
    box.put_many([(f"{first}-{s:09d}", "t", "{}") for s in range(6)])  # the killed run had queued 0…5
    box.remove(*[r[0] for r in box.head(6)])  # …and they were acknowledged
    sink = MqttSink("mqtt://127.0.0.1:1", "edge-stpm/{host}/{source}", tmp_path / "outbox.db", "sha",
                    record=tmp_path / "h.db")
    sink.outbox = box
    assert sink.catch_up() == 4
    got = [(json.loads(p)["result_id"], t.rsplit("/", 1)[1], json.loads(p)["camera"]) for _, t, p in box.head(10)]
    assert got == [(f"{first}-{s:09d}", str(s % 2), {"frame_id": 7}) for s in range(6, 10)]
    assert sink.catch_up() == 0, "queued once"
    box.close()
