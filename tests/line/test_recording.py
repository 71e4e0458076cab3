"""Recordings that survive a kill: segments finished (renamed) as the run goes, the unfinished part of a killed run
recovered (.mkv/.avi: still playable) or removed (.mp4: its index is written last) on the next start; and --loop."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_stpm.runtime.loop.sinks.recording import Recorder, part_path, readable_frames, recover_leftovers, segment_path

WRITER = """
import sys, time, cv2, numpy as np
w = cv2.VideoWriter(sys.argv[1], cv2.VideoWriter_fourcc(*sys.argv[2]), 30, (96, 64))
rng = np.random.default_rng(0)
i = 0
while True:  # noise: ~18 KB a frame, so FFmpeg's 256 KB write buffer has gone to disk several times by 'ready'
    w.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)); i += 1
    if i == 90: print("ready", flush=True)
    time.sleep(0.002)
"""


def killed_part(path: Path, fourcc: str) -> Path:
    """The temporary file a writer leaves when SIGKILLed after 90+ frames."""
    part = part_path(path)
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(part), fourcc], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    return part


def test_segments_hold_every_frame_in_order(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.avi", 30.0, segment_s=0.2)
    for i in range(40):
        rec.write(np.full((48, 64, 3), 5 * i, np.uint8))
        time.sleep(0.02)  # 40 frames over ~0.8 s: 3-5 segments of 0.2 s
    first = rec.finalise()
    assert first == tmp_path / "r.avi"
    assert 3 <= len(rec.segments) <= 6, rec.segments
    assert rec.segments == [segment_path(tmp_path / "r.avi", k) for k in range(len(rec.segments))]
    assert rec.segments[1].name == "r.001.avi"
    means = []
    for seg in rec.segments:
        cap = cv2.VideoCapture(str(seg))
        while (got := cap.read())[0]:
            means.append(float(got[1].mean()))
    assert len(means) == 40, "no frame lost or doubled between segments"
    assert np.allclose(means, [5 * i for i in range(40)], atol=3), "frames in order across segments (MJPG ±3)"
    assert not list(tmp_path.glob(".*part*")), "no temporary left"


@pytest.mark.parametrize("suffix,fourcc,kept", [(".mkv", "MJPG", True), (".avi", "MJPG", True), (".mp4", "mp4v", False)])
def test_leftover_of_a_killed_writer_is_recovered_or_removed(tmp_path: Path, suffix: str, fourcc: str, kept: bool) -> None:
    path = tmp_path / f"out{suffix}"
    part = killed_part(path, fourcc)
    later = killed_part(segment_path(path, 3), fourcc)
    other = killed_part(tmp_path / f"out_other{suffix}", fourcc)  # another recording's leftover: not ours to touch
    said = recover_leftovers(path)
    assert len(said) == 2 and not part.exists() and not later.exists() and other.exists()
    found = sorted(tmp_path.glob(f"out.recovered-*{suffix}"))
    if kept:
        assert [s.split(" ")[0] for s in said] == ["recovered", "recovered"]
        assert len(found) == 2 and any(".003" in f.name for f in found)
        # measured: 107 of the 90+ frames written before the kill were readable (the rest sat in the write buffer)
        assert all(readable_frames(f) >= 45 for f in found), "most of the frames written before 'ready'"
    else:
        assert [s.split(" ")[0] for s in said] == ["removed", "removed"] and not found
        assert "use .mkv or .avi" in said[0]
    assert recover_leftovers(path) == [], "nothing left to do the second time"


def test_killed_run_keeps_its_finished_segments_and_the_next_run_recovers_the_rest(exported: Path, synth_dir: Path,
                                                                                   tmp_path: Path) -> None:
    """SIGKILL a `run --record` while it records in 0.5 s segments: every finished segment plays, the unfinished one
    is recovered by the next run (one note line), and the next run records afresh."""
    rec = tmp_path / "rec" / "out.mkv"
    base = [sys.executable, "-m", "edge_stpm.cli", "run", "--model", str(exported), "--source",
            str(synth_dir / "video.avi"), "--headless", "--record", str(rec), "--no-history", "--threads", "1"]
    cmd = base + ["--loop", "--record-segment", "0.5"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not segment_path(rec, 2).exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert segment_path(rec, 2).exists(), "three segments finished within 120 s"
        time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finished = sorted(rec.parent.glob("out*.mkv"))
    assert len(finished) >= 3 and all(readable_frames(f) > 0 for f in finished), finished
    parts = list(rec.parent.glob(".out*.part.mkv"))
    assert len(parts) <= 1
    r = subprocess.run(base + ["--max-frames", "5"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if "stopped hard" in line]
    assert len(notes) == len(parts), r.stderr
    recovered = list(rec.parent.glob("out.recovered-*.mkv"))
    assert len(recovered) == sum("recovered" in n for n in notes) and all(readable_frames(f) > 0 for f in recovered)
    assert readable_frames(rec) == 5 and not list(rec.parent.glob(".*part*"))


def test_loop_plays_a_video_again(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    from edge_stpm.runtime.loop.sources import open_source

    frames = int(cv2.VideoCapture(str(synth_dir / "video.avi")).get(cv2.CAP_PROP_FRAME_COUNT))
    src = open_source(str(synth_dir / "video.avi"), loop=True)
    try:
        got = [src.read() for _ in range(2 * frames + 3)]
    finally:
        src.close()
    assert all(f is not None for f in got) and [f.index for f in got] == list(range(2 * frames + 3))
    assert np.array_equal(got[0].image, got[frames].image), "the second pass starts with the first frame"
    folder = open_source(str(synth_dir / "test" / "good"), loop=True)
    n = len(list((synth_dir / "test" / "good").iterdir()))
    try:
        again = [folder.read() for _ in range(n + 1)]
    finally:
        folder.close()
    assert np.array_equal(again[0].image, again[n].image)


def test_temporaries_of_a_killed_write_are_cleaned_on_the_next_start(tmp_path: Path) -> None:
    """A killed export / train leaves `.model.onnx.XXXXXXXX.tmp.onnx` beside the finished files: the next command
    into that folder removes it (one note), never a finished file and never a fresh temporary (another writer's)."""
    import tempfile

    from edge_stpm.common.files import clean_temporaries, output_dir

    (tmp_path / "model.onnx").write_bytes(b"finished")
    # the temporary atomic_path makes (same naming), as a SIGKILL before its rename leaves it
    fd, name = tempfile.mkstemp(prefix=".model.onnx.", suffix=".tmp.onnx", dir=tmp_path)
    os.write(fd, b"half")
    os.close(fd)
    left = Path(name)
    fresh = tmp_path / ".other.onnx.abcd1234.tmp.onnx"
    fresh.write_bytes(b"being written")
    os.utime(left, (time.time() - 120, time.time() - 120))
    said = clean_temporaries(tmp_path)
    assert len(said) == 1 and "stopped hard" in said[0] and left.name in said[0]
    assert not left.exists() and fresh.exists() and (tmp_path / "model.onnx").read_bytes() == b"finished"
    os.utime(fresh, (time.time() - 120, time.time() - 120))
    assert output_dir(tmp_path) == tmp_path and not fresh.exists(), "output_dir cleans as it creates"


def test_a_killed_exports_candidate_graph_is_cleaned_by_the_next_export(tmp_path: Path) -> None:
    from edge_stpm.common.files import clean_temporaries
    from edge_stpm.training.export.exporter import CANDIDATE

    stale, kept = tmp_path / ".model_int8.candidate.onnx", tmp_path / "model_int8.onnx"
    stale.write_bytes(b"written, never checked")
    kept.write_bytes(b"finished")
    os.utime(stale, (time.time() - 120, time.time() - 120))
    assert clean_temporaries(tmp_path) == [] and stale.exists(), "not an atomic write's temporary"
    assert len(clean_temporaries(tmp_path, also=(CANDIDATE,))) == 1 and not stale.exists() and kept.exists()
