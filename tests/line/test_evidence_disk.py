"""A full disk never stops verdicts or the record (issue 31): the evidence folder on a real tmpfs of 1 MB that is
almost full (a file that is not evidence fills it, so retention has nothing of its own to delete), `run --config` on
the NG-rich synthetic video for 150 frames: every frame gets its verdict and its record row, the evidence that did
not fit is counted and said once. Needs root to mount the tmpfs; skips with the reason otherwise."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 150


@pytest.fixture
def full_tmpfs(tmp_path: Path):
    from helpers.disk import small_tmpfs

    with small_tmpfs(tmp_path / "ev", 1024, leave_kb=60) as mnt:  # ~60 KB free: a few frames fit, then it is full
        yield mnt


def test_a_full_evidence_disk_costs_evidence_never_a_verdict(exported: Path, synth_dir: Path, tmp_path: Path,
                                                             full_tmpfs: Path) -> None:
    st = tmp_path / "st.toml"
    st.write_text(f"""[[recipes]]
name = "tile"
index = 0
model = "{exported}"
[[sources]]
spec = "{synth_dir / 'video.avi'}"
[run]
headless = true
loop = true
summary_json = "{tmp_path / 's.json'}"
[history]
db = "{tmp_path / 'h.db'}"
[evidence]
folder = "{full_tmpfs}"
min_free_mb = 0
""")
    r = subprocess.run([sys.executable, "-m", "edge_stpm.cli", "run", "--config", str(st), "--max-frames", str(N)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["frames"] == N and s["ng_frames"] > 20
    con = sqlite3.connect(str(tmp_path / "h.db"))
    assert con.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == N, "a record row for every frame"
    saved = con.execute("SELECT COUNT(*) FROM evidence").fetchone()[0]
    con.close()
    ev = next(x for x in s["sinks"] if x["sink"] == "evidence")
    assert ev["evidence_failed"] > 0 and saved < s["ng_frames"], (ev, saved, r.stderr[-1500:], r.stdout[-1500:])
    assert r.stderr.count("evidence not saved") + r.stdout.count("evidence not saved") == 1, r.stderr[-2000:]
    assert (full_tmpfs / "filler.bin").exists(), "what is not evidence is never deleted"
