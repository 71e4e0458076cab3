"""Reviewed results become data: `edge-stpm dataset --from-history` on a record with reviewed rows writes the exact
files, split and manifest; a record with no reviewed rows, frames missing from the evidence folder and a recipe the
record does not know are one line each."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from edge_stpm.cli import app

runner = CliRunner()


def _record(tmp: Path, reviews: dict[int, tuple[str, str | None]], n: int = 10) -> Path:
    from edge_stpm.runtime.loop.sinks.record import COLUMNS, connect, iso

    db = tmp / "h.db"
    con = connect(db)
    rows, ev = [], []
    for i in range(n):
        rid = f"run-{i:03d}"
        f = tmp / "ev" / f"{rid}.png"
        f.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(f), np.full((16, 16, 3), i, np.uint8))
        rows.append((rid, 1000.0 + i, iso(1000.0 + i), 0, "cam", i, None, "NG" if i % 2 else "OK", 1.0, 1.5, 1.0, 1.0,
                     f"sha{i % 2}", None, 3.0, None, 0, "tile", None))
        ev.append((rid, 1000.0 + i, "ng" if i % 2 else "ok", str(f), None, 100))
    with con:
        con.executemany(f"INSERT INTO inspections ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
        con.executemany("INSERT INTO evidence VALUES (?, ?, ?, ?, ?, ?)", ev)
        con.executemany("INSERT INTO reviews VALUES (?, ?, ?, ?, ?)",
                        [(f"run-{i:03d}", m, t, "operator@127.0.0.1", 2000.0) for i, (m, t) in reviews.items()])
    con.close()
    return db


def test_dataset_from_reviewed_history(tmp_path: Path) -> None:
    from edge_stpm.runtime.feedback.dataset import _held_out

    reviews = {1: ("good", None), 3: ("good", None), 5: ("defect", "scratch"), 7: ("defect", None), 9: ("good", None)}
    db = _record(tmp_path, reviews)
    r = runner.invoke(app, ["dataset", "--from-history", str(db), "--recipe", "tile", "--out", str(tmp_path / "ds"),
                            "--held-out", "0.5"])
    assert r.exit_code == 0, r.output
    got = sorted(str(p.relative_to(tmp_path / "ds")) for p in (tmp_path / "ds").rglob("*.png"))
    want = sorted(["test/scratch/run-005.png", "test/defect/run-007.png"] +
                  [f"{'test' if _held_out(f'run-{i:03d}', 0.5) else 'train'}/good/run-{i:03d}.png" for i in (1, 3, 9)])
    assert got == want
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert [(f["file"], f["mark"], f["model_sha256"], f["who"]) for f in m["files"]] == \
        [(w, reviews[int(w[-7:-4])][0], "sha1", "operator@127.0.0.1") for w in
         sorted(want, key=lambda w: int(w[-7:-4]))]
    assert sum(m["counts"].values()) == 5 and not m["include_ok"]
    assert (tmp_path / "ds" / "test/scratch/run-005.png").read_bytes() == (tmp_path / "ev" / "run-005.png").read_bytes()
    r = runner.invoke(app, ["dataset", "--from-history", str(db), "--recipe", "tile", "--out", str(tmp_path / "ds2"),
                            "--include-ok"])
    m2 = json.loads((tmp_path / "ds2" / "manifest.json").read_text())
    assert sum(m2["counts"].values()) == 10 and sum(f["source"] == "sampled OK" for f in m2["files"]) == 5


def _one_line(r, text: str) -> None:
    errs = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert r.exit_code == 2 and len(errs) == 1 and text in errs[0] and "Traceback" not in r.output, r.output


def test_dataset_bad_input_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    db = _record(tmp_path / "none", {})
    _one_line(runner.invoke(app, ["dataset", "--from-history", str(db), "--recipe", "tile", "--out",
                                  str(tmp_path / "o1")]), "no reviewed results of recipe 'tile'")
    (tmp_path / "r").mkdir()
    db2 = _record(tmp_path / "r", {1: ("good", None)})
    _one_line(runner.invoke(app, ["dataset", "--from-history", str(db2), "--recipe", "housing", "--out",
                                  str(tmp_path / "o2")]), "recipe 'housing' is not in")
    (tmp_path / "r" / "ev" / "run-001.png").unlink()
    _one_line(runner.invoke(app, ["dataset", "--from-history", str(db2), "--recipe", "tile", "--out",
                                  str(tmp_path / "o3")]), "1 saved frames are missing from the evidence folder")
    assert not (tmp_path / "o3").exists() or not any((tmp_path / "o3").rglob("*.png"))
    _one_line(runner.invoke(app, ["dataset", "--from-history", str(tmp_path / "nope.db"), "--recipe", "tile",
                                  "--out", str(tmp_path / "o4")]), "no inspection record")
