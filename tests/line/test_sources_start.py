"""A live source that is down when the run starts (issue 37): with reconnecting on, the run inspects the sources
that opened and retries the other in the background until it opens; without, one error line. No password in
any line (``redact``). The down camera is an RTSP URL on a closed loopback port (OpenCV fails at once there)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from edge_stpm.cli import app
from edge_stpm.common.errors import UserError
from edge_stpm.runtime.inspector import Inspector
from edge_stpm.runtime.loop.pipeline import Pipeline, RunOptions, run, source_gauges
from edge_stpm.runtime.loop.sources import PendingSource, open_sources
from helpers.line_parts import free_port

SECRET = "secret"


def down_camera() -> str:
    return f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/x"


def stop_when(done: Callable[[], bool], stop: threading.Event, bound_s: float) -> threading.Thread:
    """A watcher that sets ``stop`` once ``done()`` holds or ``bound_s`` seconds passed."""
    def watch() -> None:
        deadline = time.monotonic() + bound_s
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_a_camera_down_at_start_does_not_stop_the_other(exported: Path, synth_dir: Path, tmp_path: Path,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    video, bad = str(synth_dir / "video.avi"), down_camera()
    srcs = open_sources([video, bad], reconnect_s=0.3, loop=True)
    assert isinstance(srcs[1], PendingSource) and srcs[1].waiting
    gauges = source_gauges(1, srcs[1])
    assert gauges["source1_waiting"][1] == 1.0 and gauges["source1_open_attempts"][1] >= 1
    insp = Inspector.load(exported / "model_fp32.onnx", "onnxruntime")
    stop, seen = threading.Event(), []
    opts = RunOptions(headless=True, stop=stop, events=tmp_path / "ev.jsonl")
    t0 = time.monotonic()
    stop_when(lambda: len(seen) >= 30 and srcs[1].open_attempts >= 4, stop, 15.0)
    try:
        s = run(insp, srcs, opts, on_frame=lambda frame, res: seen.append(frame.index), specs=[video, bad])
    finally:
        insp.close()
    elapsed = time.monotonic() - t0
    per = {x["source"]: x for x in s.sources}
    assert per[0]["frames"] >= 30 and elapsed < 15.0, (per[0], elapsed)  # the good camera was inspected meanwhile
    assert per[1]["frames"] == 0 and per[1]["never_opened"] and per[1]["open_attempts"] >= 4, per[1]
    assert per[1]["spec"].startswith("rtsp://admin:***@127.0.0.1:")
    out = capfd.readouterr()
    lines = (out.out + out.err).splitlines()
    assert sum("still down after" in line for line in lines) >= 3, lines  # one note a try
    shown = json.dumps(dataclasses.asdict(s)) + "\n".join(lines) + (tmp_path / "ev.jsonl").read_text()
    assert SECRET not in shown and "admin:***@" in shown


def test_a_camera_that_comes_up_later_joins_the_run(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    """The late camera: a ``file://`` stream whose file appears after the start (OpenCV opens it like a URL)."""
    later = tmp_path / "later.avi"
    srcs = open_sources([str(synth_dir / "video.avi"), f"file://{later}"], reconnect_s=0.3, loop=True)
    pending = srcs[1]
    assert isinstance(pending, PendingSource) and pending.waiting
    def appear() -> None:  # whole at once, as a camera that answers
        shutil.copy(synth_dir / "video.avi", tmp_path / "part.avi")
        (tmp_path / "part.avi").rename(later)

    threading.Timer(1.0, appear).start()
    insp = Inspector.load(exported / "model_fp32.onnx", "onnxruntime")
    stop = threading.Event()
    pipe = Pipeline(insp, srcs, RunOptions(headless=True, stop=stop), ["steady", "late"])
    try:
        pipe.open()
        stop_when(lambda: pipe.chans[1].frames >= 5, stop, 15.0)
        s = pipe.run()
    finally:
        insp.close()
    per = {x["spec"]: x for x in s.sources}
    assert per["late"]["frames"] >= 5 and not per["late"]["never_opened"], per["late"]
    assert per["late"]["open_attempts"] >= 2 and per["late"]["reconnects"] >= 1, per["late"]
    assert per["steady"]["frames"] > 0


def test_all_down_fails_at_once_unless_told_to_wait(tmp_path: Path, synth_dir: Path,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    bad = down_camera()
    for reconnect in (0.0, 0.3):  # someone at a terminal: the first error, password masked, whatever reconnect
        with pytest.raises(UserError, match=r"cannot open rtsp://admin:\*\*\*@") as e:
            open_sources([bad, down_camera()], reconnect_s=reconnect)
        assert SECRET not in str(e.value)
    with pytest.raises(UserError) as e:  # reconnect 0: the first down source stops the start
        open_sources([str(synth_dir / "video.avi"), bad], reconnect_s=0.0)
    assert SECRET not in str(e.value)
    srcs = open_sources([bad], reconnect_s=0.2, wait_all=True)  # a station: it waits, and says so each try
    try:
        assert srcs[0].read(0.5) is None and not srcs[0].ended and srcs[0].waiting
        deadline = time.monotonic() + 5.0
        while srcs[0].open_attempts < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        srcs[0].close()
    out = capfd.readouterr()
    text = out.out + out.err
    assert "no source could be opened: waiting" in text and text.count("still down after") >= 2, text
    assert SECRET not in text


def test_without_reconnect_one_error_line_without_the_password(exported: Path, synth_dir: Path) -> None:
    res = CliRunner().invoke(app, ["run", "--model", str(exported), "--source", str(synth_dir / "video.avi"),
                                   "--source", down_camera(), "--reconnect", "0", "--headless", "--no-history"])
    assert res.exit_code == 2 and res.output.count("error:") == 1, res.output
    assert "cannot open rtsp://admin:***@127.0.0.1:" in res.output and SECRET not in res.output, res.output
