"""The pipeline's sinks: a slow sink drops (counted) instead of stalling the loop, a failing one is reported once
and the others go on, a required one sets the error state; verdict sinks get every result before its picture."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_stpm.runtime.loop.pipeline import RunOptions, run
from edge_stpm.runtime.loop.sinks.base import Result, Sink, SinkRunner
from edge_stpm.runtime.loop.sources import open_source
from edge_stpm.runtime.inspector import Inspector


class Counting(Sink):
    def __init__(self, name: str, picture: bool = False, sleep_s: float = 0.0, fail: bool = False,
                 required: bool = False) -> None:
        self.name, self.picture, self.sleep_s, self.fail, self.required = name, picture, sleep_s, fail, required
        self.seen: list[Result] = []
        self.t_seen: list[float] = []
        self.queue_size = 4
        self.closed = False

    def take(self, r: Result) -> None:
        self.t_seen.append(time.monotonic())
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail:
            raise RuntimeError("this sink always fails")
        self.seen.append(r)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def insp(exported: Path):
    i = Inspector.load(exported / "model_fp32.onnx", "onnxruntime")
    yield i
    i.close()


def test_slow_and_failing_sinks_do_not_stall_the_others(insp: Inspector, synth_dir: Path, capsys) -> None:
    fast, slow = Counting("fast"), Counting("slow", sleep_s=0.2)
    bad, pictures = Counting("bad", fail=True), Counting("pictures", picture=True)
    pictures.queue_size = 1000
    s = run(insp, open_source(str(synth_dir / "video.avi")),
            RunOptions(headless=True, sinks=[fast, slow, bad, pictures], record=None))
    assert s.frames == 60
    by = {x["sink"]: x for x in s.sinks}
    assert len(fast.seen) == 60 and [r.frame_index for r in fast.seen] == list(range(60))  # order kept
    # the slow sink (200 ms a result) saw a few and dropped the rest, counted; the loop did not wait for it
    assert by["slow"]["taken"] + by["slow"]["dropped"] == 60 and by["slow"]["dropped"] > 0, by["slow"]
    assert s.seconds < 60 * 0.2 / 2, s.seconds  # a loop that waited on it would take >= 12 s
    assert by["bad"]["failed"] == 60 and "always fails" in by["bad"]["last_error"]
    assert s.error is None  # none of these is required
    assert capsys.readouterr().err.count("sink bad failed") == 1
    assert all(x.closed for x in (fast, slow, bad, pictures))


def test_verdict_reaches_verdict_sinks_before_the_picture_is_drawn(insp: Inspector, synth_dir: Path) -> None:
    verdict, pictures = Counting("verdict"), Counting("pictures", picture=True)
    verdict.queue_size = pictures.queue_size = 1000
    s = run(insp, open_source(str(synth_dir / "video.avi")), RunOptions(headless=True, sinks=[verdict, pictures],
                                                                         max_frames=20))
    assert s.frames == 20 and len(verdict.seen) == 20 and len(pictures.seen) == 20  # a picture sink gets every frame
    for r in verdict.seen:
        assert r.t_verdict >= r.t_capture
    for r in pictures.seen:
        assert r.picture is not None and r.t_picture is not None and r.t_picture >= r.t_verdict
    assert s.latency_ms["verdict"]["p50"] > 0


def test_required_sink_failure_is_an_error_state(insp: Inspector, synth_dir: Path) -> None:
    from edge_stpm.runtime.line.setup import Line
    from edge_stpm.runtime.line import plc as plc_mod

    record = Counting("record", fail=True, required=True)
    line = Line(plc=plc_mod.PlcState())
    s = run(insp, open_source(str(synth_dir / "video.avi")),
            RunOptions(headless=True, sinks=[record], max_frames=5, on_error=line.on_error))
    assert s.error and s.error.startswith("record:") and "always fails" in s.error
    regs = line.plc.registers()  # the PLC sees it: error bit, code 4 (a required output is failing)
    assert regs[plc_mod.ERROR_CODE] == plc_mod.ERR_OUTPUT and regs[plc_mod.STATUS] & plc_mod.BIT_ERROR


def test_runner_drops_oldest_and_counts() -> None:
    import threading

    gate = threading.Event()

    class Blocked(Sink):
        name, queue_size = "blocked", 3

        def __init__(self) -> None:
            self.got: list[int] = []

        def take(self, r) -> None:
            gate.wait(10)
            self.got.append(r)

    sink = Blocked()
    runner = SinkRunner(sink, lambda _: None).start()
    for i in range(10):
        runner.offer(i)  # type: ignore[arg-type]
    time.sleep(0.05)
    gate.set()
    runner.close()
    # one item was already being taken, 3 waited; the others were dropped as newer ones arrived
    assert runner.stats.taken + runner.stats.dropped == 10 and runner.stats.dropped >= 6
    assert sink.got[-1] == 9  # the newest survives


def test_workers_keep_the_order_and_the_verdicts(exported: Path, synth_dir: Path) -> None:
    """--workers 3 infers three frames at once on one session: every sink still gets every result in reading
    order, with the verdicts and scores of the one-worker run (same graph, same frames; scores to 1e-5)."""
    got = {}
    for w in (1, 3):
        i = Inspector.load(exported / "model_fp32.onnx", "onnxruntime", threads=1)
        sink, pictures = Counting("verdicts"), Counting("pictures", picture=True)
        sink.queue_size = pictures.queue_size = 1000
        try:
            s = run(i, open_source(str(synth_dir / "video.avi")), RunOptions(headless=True, workers=w,
                                                                               sinks=[sink, pictures]))
        finally:
            i.close()
        assert s.frames == 60 and s.failed_frames == 0
        assert [r.frame_index for r in sink.seen] == list(range(60)) == [r.frame_index for r in pictures.seen]
        assert [r.seq for r in sink.seen] == list(range(60))
        got[w] = [(r.inspection.verdict, r.inspection.score) for r in sink.seen]
    assert [v for v, _ in got[1]] == [v for v, _ in got[3]]
    assert max(abs(a - b) for (_, a), (_, b) in zip(got[1], got[3])) < 1e-5
    i = Inspector.load(exported / "model_fp32.onnx", "onnxruntime", threads=1)
    try:  # --max-frames counts the frames being inferred on the workers too: exactly 25, not 25 + those in flight
        s = run(i, open_source(str(synth_dir / "video.avi")), RunOptions(headless=True, workers=3, max_frames=25))
    finally:
        i.close()
    assert s.frames == 25 and s.sources[0]["frames"] == 25, s.sources


def test_workers_need_a_concurrent_backend(trained: Path, synth_dir: Path) -> None:
    from helpers.edge_cli import cli, one_error

    one_error(cli("run", "--model", trained / "model.pt", "--source", synth_dir / "video.avi", "--headless",
                  "--workers", 2), "--workers 2 needs a backend that can infer on several threads at once")


def test_default_workers_one_per_core_only_for_several_free_running_sources(exported: Path, trained: Path) -> None:
    """run's --workers default: 1 (lowest verdict latency) for one source, a trigger, a given --threads, one core or a
    backend that cannot take concurrent calls; one per core, at most one per source, for several free-running
    sources on ONNX Runtime CPU."""
    from edge_stpm.runtime.backends.select import default_workers

    g = exported / "model_fp32.onnx"
    def dw(*a):
        return default_workers(*a)[:2]

    assert dw(g, "auto", None, 2, True, None, 2)[0] == 2
    assert dw(g, "auto", None, 4, True, None, 2)[0] == 2
    assert dw(g, "onnxruntime", None, 3, True, None, 8)[0] == 3
    assert dw(g, "auto", None, 1, True, None, 2) == (1, "")
    assert dw(g, "auto", None, 2, False, None, 2) == (1, "")  # trigger mode: frames come one at a time
    assert dw(g, "auto", None, 2, True, 1, 2) == (1, "")  # --threads given: the user's own tuning
    assert dw(g, "auto", None, 2, True, None, 1) == (1, "")
    assert dw(trained / "model.pt", "auto", None, 2, True, None, 2) == (1, "")  # PyTorch: not concurrent
    assert dw("grpc://127.0.0.1:1/m", "auto", None, 2, True, None, 2) == (1, "")
    n, _, choice = default_workers(exported, "auto", None, 2, True, None, 2)  # a bundle: the choice load reuses
    assert n == 2 and choice is not None and choice.backend == "onnxruntime" and choice.path.name == "model_fp32.onnx"


def test_two_sources_run_on_the_default_workers(exported: Path, synth_dir: Path) -> None:
    from helpers.edge_cli import cli

    from edge_stpm.common.threads import available_cores

    video = synth_dir / "video.avi"
    r = cli("run", "--model", exported / "model_fp32.onnx", "--source", video, "--source", video, "--headless",
            "--max-frames", 20)
    assert r.returncode == 0, r.stderr
    n = min(available_cores(), 2)
    said = [ln for ln in r.stdout.splitlines() if ln.startswith("workers:")]
    assert said == ([f"workers: {n} inference workers × 1 thread(s): 2 free-running sources on ONNX Runtime CPU "
                     "(--workers 1 for the lowest verdict latency)"] if n > 1 else []), r.stdout
    assert "40 frames" in r.stdout, r.stdout
