"""kill -9 trials: `train`, `export`, `build-engine` and `run --record` (with the inspection record, MQTT through
the outbox to a real mosquitto, segmented recording) SIGKILLed at random moments, then everything they leave
checked — no final file half-written, SQLite integrity, nothing recorded lost — and the next start's handling of
leftover temporaries counted.

    python3 benchmarks/kill9.py BUNDLE DATA OUT_DIR [TRIALS_PER_COMMAND=8] [SEED=0] [ONLY=train,export,build-engine,run]

BUNDLE: an exported bundle (for run/build-engine); DATA: an MVTec-layout folder with video.avi (edge-stpm demo's
data/ works). Writes OUT_DIR/kill9.json and prints a table."""
from __future__ import annotations

import json
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.line_parts import Subscriber, broker  # noqa: E402

from edge_stpm.runtime.loop.sinks.recording import readable_frames  # noqa: E402
from edge_stpm.common.errors import UserError  # noqa: E402

CLI = [sys.executable, "-m", "edge_stpm.cli"]


def kill_after(args: list[str], seconds: float, env: dict | None = None) -> tuple[bool, str]:
    """Start the command, SIGKILL it after ``seconds``; (killed before it ended, its stderr tail)."""
    p = subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, **(env or {})))
    try:
        p.wait(timeout=seconds)
        return False, (p.stderr.read() if p.stderr else "")[-300:]
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        return True, ""


def full_run(args: list[str]) -> float:
    """Seconds one uninterrupted run of the command takes here (the kill moments are drawn inside it)."""
    t = time.monotonic()
    r = subprocess.run(CLI + args, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-500:]
    return time.monotonic() - t


def leftovers(folder: Path) -> list[str]:
    """Temporaries in ``folder``: unfinished recording parts and atomic writes' temporaries (files.TEMP_NAME)."""
    from edge_stpm.common.files import TEMP_NAME

    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".part" in p.name or TEMP_NAME.match(p.name))


def backdate(folder: Path, seconds: float = 60.0) -> None:
    """Make every file look ``seconds`` old: the next start then treats temporaries as a dead run's (it leaves
    those changed in the last 30 s to a writer that may still be at work) — as a restart after a power cut would."""
    t = time.time() - seconds
    for p in folder.rglob("*"):
        os.utime(p, (t, t))


def check_train(out: Path) -> list[str]:
    from edge_stpm.training import checkpoint

    bad = []
    if (out / "model.pt").exists():
        try:
            checkpoint.build_stpm(checkpoint.read(out / "model.pt"))
        except UserError as exc:
            bad.append(f"model.pt: {exc}")
    for js in (p for p in out.glob("*.json") if not p.name.startswith(".")):
        try:
            json.loads(js.read_text())
        except ValueError:
            bad.append(f"{js.name}: not JSON")
    return bad


def check_export(out: Path) -> list[str]:
    from edge_stpm.contract.artifacts import read_onnx_metadata, verify_bundle

    bad = []
    for g in (p for p in out.glob("*.onnx") if not p.name.startswith(".")):  # finished files only
        try:
            read_onnx_metadata(g)
        except UserError as exc:
            bad.append(f"{g.name}: {exc}")
    if (out / "manifest.json").exists():
        try:
            verify_bundle(out)
        except UserError as exc:
            bad.append(f"manifest: {exc}")
    return bad


def integrity(db: Path) -> str:
    if not db.exists():
        return "absent"
    with sqlite3.connect(db) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0]


def trial_run(bundle: Path, video: Path, work: Path, seconds: float, port: int, sub: Subscriber) -> dict[str, Any]:
    rec = work / "rec" / "out.mkv"
    args = ["run", "--model", str(bundle), "--source", str(video), "--loop", "--headless", "--threads", "1",
            "--record", str(rec), "--record-segment", "1", "--history-db", str(work / "h.db"),
            "--mqtt", f"mqtt://127.0.0.1:{port}", "--mqtt-outbox", str(work / "outbox.db")]
    killed, _ = kill_after(args, seconds)
    segs = sorted(rec.parent.glob("out*.mkv"))
    corrupt = [s.name for s in segs if readable_frames(s) == 0]
    parts = leftovers(rec.parent)
    ok = {"history": integrity(work / "h.db"), "outbox": integrity(work / "outbox.db")}
    with sqlite3.connect(work / "h.db") as con:
        ids = [r[0] for r in con.execute("SELECT result_id FROM inspections ORDER BY id")]
    seqs = [int(i.rsplit("-", 1)[1]) for i in ids]
    # the restart uses the same record and outbox, as the box's service would: it catches up from the record
    r = subprocess.run(CLI + args + ["--max-frames", "20"], capture_output=True, text=True, timeout=300)
    notes = [ln for ln in r.stderr.splitlines() if "stopped hard" in ln]
    with sqlite3.connect(work / "h.db") as con:
        everything = {row[0] for row in con.execute("SELECT result_id FROM inspections")}
    deadline = time.monotonic() + 15  # what the broker acknowledged reaches the subscriber a little later
    while time.monotonic() < deadline and not everything <= set(sub.ids()):
        time.sleep(0.05)
    got = set(sub.ids())
    with sqlite3.connect(work / "outbox.db") as con:
        left = con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    return {"seconds": round(seconds, 2), "killed": killed, "segments": len(segs), "corrupt_segments": corrupt,
            "parts_left": len(parts),
            "recovered": sum("recovered" in n for n in notes), "removed": sum("removed" in n for n in notes),
            "restart_rc": r.returncode, "integrity": ok, "record_rows": len(ids),
            "record_contiguous": seqs == list(range(1, len(seqs) + 1)) or seqs == list(range(len(seqs))),
            "caught_up_from_record": sum("not yet in the MQTT outbox" in ln for ln in r.stderr.splitlines()),
            "recorded_not_published": len(set(ids) - got), "restart_not_published": len(everything - set(ids) - got),
            "outbox_left_after_restart": left}


def main() -> None:
    bundle, data, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    rnd = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    only = set(sys.argv[6].split(",")) if len(sys.argv) > 6 else {"train", "export", "build-engine", "run"}
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="kill9-"))
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "export": [], "build-engine": [], "run --record": []}
    train = lambda w: ["train", "--data", str(data), "--out", str(w), "--backbone", "mobilenet_v2", "--epochs", "12",
                       "--size", "128", "--threads", "1"]  # noqa: E731
    whole = {"train": full_run(train(root / "train_full"))} if only & {"train", "export"} else {}
    for k in range(n if "train" in only else 0):
        w = root / f"train{k}"
        t = rnd.uniform(0.05, 0.98) * whole["train"]
        killed, _ = kill_after(train(w), t)
        rows["train"].append({"seconds": round(t, 2), "killed": killed, "corrupt": check_train(w) if w.exists() else [],
                              "parts_left": leftovers(w) if w.exists() else [],
                              "final": sorted(p.name for p in w.glob("*") if not p.name.startswith(".")) if w.exists() else []})
        print("train", rows["train"][-1], flush=True)
    ckpt = root / "train_full" / "model.pt"
    export = lambda w: ["export", "--checkpoint", str(ckpt), "--out", str(w), "--precision", "fp32,fp16,int8",
                        "--calib", str(data / "train" / "good"), "--threads", "1"]  # noqa: E731
    if "export" in only:
        whole["export"] = full_run(export(root / "export_full"))
    for k in range(n if "export" in only else 0):
        w = root / f"export{k}"
        t = rnd.uniform(0.05, 0.98) * whole["export"]
        killed, _ = kill_after(export(w), t)
        row = {"seconds": round(t, 2), "killed": killed, "corrupt": check_export(w) if w.exists() else [],
               "parts_left": leftovers(w) if w.exists() else [],
               "final": sorted(p.name for p in w.glob("*") if not p.name.startswith(".")) if w.exists() else []}
        if row["parts_left"]:  # the next export into the folder cleans them and finishes a whole bundle
            backdate(w)
            r = subprocess.run(CLI + export(w), capture_output=True, text=True, timeout=1800)
            row |= {"next_start_rc": r.returncode, "next_start_notes": r.stderr.count("stopped hard") +
                    r.stdout.count("stopped hard"), "left_after_next_start": leftovers(w), "corrupt_after": check_export(w)}
        rows["export"].append(row)
        print("export", rows["export"][-1], flush=True)
    for k in range(max(2, n // 2) if "build-engine" in only else 0):
        w = root / f"engine{k}"
        t = rnd.uniform(0.5, 5)
        killed, err = kill_after(["build-engine", "--model", str(bundle), "--out", str(w / "m.engine")], t)
        rows["build-engine"].append({"seconds": round(t, 2), "killed": killed, "ended_with": err.strip()[-160:],
                                     "files": sorted(p.name for p in w.rglob("*")) if w.exists() else []})
        print("build-engine", rows["build-engine"][-1], flush=True)
    with broker(root) as b:
        sub = Subscriber(b.port)
        time.sleep(0.5)
        for k in range(n if "run" in only else 0):
            w = root / f"run{k}"
            w.mkdir()
            rows["run --record"].append(trial_run(bundle, data / "video.avi", w, rnd.uniform(6, 30), b.port, sub))
            print("run", rows["run --record"][-1], flush=True)
        sub.close()
    result = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "uninterrupted_s": whole, "trials": rows}
    tmp = out / ".kill9.json.part"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out / "kill9.json")
    corrupt = {"train": sum(bool(r["corrupt"]) for r in rows["train"]),
               "export": sum(bool(r["corrupt"]) for r in rows["export"]),
               "run --record": sum(bool(r["corrupt_segments"]) or r["integrity"] != {"history": "ok", "outbox": "ok"}
                                   for r in rows["run --record"])}
    print("| command | trials | killed mid-work | trials with a corrupt final file |")
    print("|---|---|---|---|")
    for cmd, rs in rows.items():
        print(f"| {cmd} | {len(rs)} | {sum(r['killed'] for r in rs)} | {corrupt.get(cmd, 0)} |")


if __name__ == "__main__":
    main()
