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
                     f"sha{i % 2}", None, 3.0, None, 0, "tile", None, "good"))
        ev.append((rid, 1000.0 + i, "ng" if i % 2 else "ok", str(f), None, 100))
    with con:
        con.executemany(f"INSERT INTO inspections ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
        con.executemany("INSERT INTO evidence VALUES (?, ?, ?, ?, ?, ?)", ev)
        con.executemany("INSERT INTO reviews VALUES (?, ?, ?, ?, ?)",
                        [(f"run-{i:03d}", m, t, "operator@127.0.0.1", 2000.0) for i, (m, t) in reviews.items()])
    con.close()
    return db


def test_dataset_from_reviewed_history(tmp_path: Path) -> None:
    from edge_stpm.runtime.learn.dataset import _held_ids

    reviews = {1: ("good", None), 3: ("good", None), 5: ("defect", "scratch"), 7: ("defect", None), 9: ("good", None)}
    db = _record(tmp_path, reviews)
    r = runner.invoke(app, ["dataset", "--from-history", str(db), "--recipe", "tile", "--out", str(tmp_path / "ds"),
                            "--held-out", "0.5"])
    assert r.exit_code == 0, r.output
    got = sorted(str(p.relative_to(tmp_path / "ds")) for p in (tmp_path / "ds").rglob("*.png"))
    rows = [{"result_id": f"run-{i:03d}", "mark": m} for i, (m, _) in reviews.items()]
    want = sorted(["test/scratch/run-005.png", "test/defect/run-007.png"] +
                  [f"{'test' if f'run-{i:03d}' in _held_ids(rows, 0.5) else 'train'}/good/run-{i:03d}.png"
                   for i in (1, 3, 9)])
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


def test_a_small_review_set_still_holds_a_part_out() -> None:
    """The split draws each good part's place from its result id; a share above 0 with two or more good parts holds
    at least one out (16 parts at 0.2 held none out in about 3 % of sets before), and the same ids give the same split."""
    from edge_stpm.runtime.learn.dataset import _draw, _held_ids

    rows = [{"result_id": f"part-{i}", "mark": "good"} for i in range(400)] + [{"result_id": "d", "mark": "defect"}]
    alone = [r for r in rows if r["mark"] == "good" and _draw(r["result_id"]) >= 0.05][:16]
    assert len(alone) == 16  # 16 good parts none of which draws under 0.05
    held = _held_ids(alone, 0.05)
    assert held == {min(alone, key=lambda r: _draw(r["result_id"]))["result_id"]}
    assert _held_ids(list(reversed(alone)), 0.05) == held
    assert _held_ids(alone, 0.0) == set() and _held_ids(alone[:1], 0.5) <= {alone[0]["result_id"]}
    assert "d" not in _held_ids(rows, 0.99)
    share = len(_held_ids(rows, 0.2)) / 400
    assert 0.15 < share < 0.25, share  # the share itself is kept (binomial sd 0.02 at n 400)


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


# --- a better model from the reviewed parts -------------------------------------------------------------------

def _drifted_sets(synth_dir: Path, tmp: Path) -> tuple[Path, Path]:
    """A new good variant (the parts 30 % brighter and lifted by 30 grey levels: a new material batch) — 20
    reviewed good parts for the memory and 10 held out (a dataset --from-history folder), and a separate reviewed
    set: 40 other good parts and every defect of the fixture, drifted the same way."""
    goods = sorted((synth_dir / "train" / "good").glob("*.png"))
    tg = sorted((synth_dir / "test" / "good").glob("*.png"))
    defects = [p for p in sorted((synth_dir / "test").glob("*/*.png")) if p.parent.name != "good"]
    drift = lambda p: cv2.convertScaleAbs(cv2.imread(str(p)), alpha=1.3, beta=30)  # noqa: E731
    reviewed, check = tmp / "reviewed", tmp / "check"
    for folder, files in ((reviewed / "train" / "good", goods[:20]), (reviewed / "test" / "good", goods[20:30]),
                          (check / "test" / "good", goods[30:60] + tg)):
        folder.mkdir(parents=True)
        for i, p in enumerate(files):
            cv2.imwrite(str(folder / f"{i:03d}.png"), drift(p))
    for p in defects:
        (check / "test" / p.parent.name).mkdir(exist_ok=True)
        cv2.imwrite(str(check / "test" / p.parent.name / p.name), drift(p))
    return reviewed, check


def test_reviewed_goods_join_the_memory_and_compare_shows_it(trained_memory: Path, synth_dir: Path,
                                                             tmp_path: Path) -> None:
    """Measured 2026-12-04 on the fixture: the old memory calls 100 % of the drifted good parts NG, the updated one
    0 %, recall 100 % for both, in under a second. Bounds: the old ≥ 50 % (the drift is real), the new ≤ 10 % and
    recall ≥ 95 %."""
    from edge_stpm.runtime.inspector import Inspector

    reviewed, check = _drifted_sets(synth_dir, tmp_path)
    new = tmp_path / "new.pt"
    r = runner.invoke(app, ["update-memory", "--checkpoint", str(trained_memory / "model.pt"), "--data", str(reviewed),
                            "--out", str(new), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "20 good images added" in r.output and new.is_file()
    assert "method transfer (auto: the model's training images are on this machine" in r.output, r.output
    r = runner.invoke(app, ["evaluate", "--compare", str(trained_memory / "model.pt"), str(new), "--data", str(check),
                            "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    old, upd = res["old"], res["new"]
    assert old["good"] == 40 and old["defects"] == upd["defects"] > 0
    assert old["false_call_rate"] >= 0.5 and upd["false_call_rate"] <= 0.1, (old, upd)
    assert upd["recall"] >= 0.95
    assert cv2.imread(str(tmp_path / "cmp" / "compare.png")) is not None
    # the table's figures are the model's own verdicts: re-run the new model here on the same images
    insp = Inspector.load(new)
    ng = [insp.inspect(cv2.imread(p)).ng for p in res["images"]]
    insp.close()
    goods = [("/test/good/" in p) for p in res["images"]]
    assert sum(n and g for n, g in zip(ng, goods)) == upd["false_calls"]
    import torch

    ck = torch.load(new, map_location="cpu", weights_only=False)
    step = ck["training"]["memory_updates"][-1]
    assert step["added_images"] == 20 and step["entries_after"] >= step["entries_before"]


def test_train_init_from_fine_tunes_the_student(trained: Path, synth_dir: Path, tmp_path: Path) -> None:
    """One epoch from the checkpoint's student stays near it (cosine ≥ 0.9 over all weights); one epoch from a fresh
    student does not (it starts from ImageNet-free initial weights far away)."""
    import torch

    reviewed, _ = _drifted_sets(synth_dir, tmp_path)
    runs = {}
    for name, extra in (("tuned", ["--init-from", str(trained / "model.pt")]), ("fresh", [])):
        r = runner.invoke(app, ["train", "--data", str(reviewed / "train" / "good"), "--out", str(tmp_path / name),
                                "--backbone", "mobilenet_v2", "--head", "stpm", "--epochs", "1", "--size", "128",
                                "--batch-size", "8", "--quiet", *extra])
        assert r.exit_code == 0, r.output
        runs[name] = torch.load(tmp_path / name / "model.pt", map_location="cpu", weights_only=False)
    old = torch.load(trained / "model.pt", map_location="cpu", weights_only=False)
    flat = lambda ck: torch.cat([v.flatten().float() for v in ck["student"].values()])  # noqa: E731
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(flat(a), flat(b), dim=0))  # noqa: E731
    assert cos(runs["tuned"], old) >= 0.9 and cos(runs["fresh"], old) < 0.9, (cos(runs["tuned"], old),
                                                                               cos(runs["fresh"], old))
    assert runs["tuned"]["training"]["n_train"] + runs["tuned"]["training"]["n_val"] == 20 + 60, \
        "the new good parts plus the checkpoint's own"


def test_feedback_training_bad_input_is_one_line(trained: Path, trained_memory: Path, tmp_path: Path) -> None:
    (tmp_path / "goods").mkdir()
    for args, msg in ((["update-memory", "--checkpoint", str(trained / "model.pt"), "--data", str(tmp_path),
                        "--out", str(tmp_path / "x.pt")], "has no memory bank"),
                      (["update-memory", "--checkpoint", str(trained_memory / "model.pt"), "--data",
                        str(tmp_path / "goods"), "--out", str(tmp_path / "x.pt")], "no good images"),
                      (["train", "--data", str(tmp_path), "--backbone", "resnet18", "--init-from",
                        str(trained / "model.pt")], "is a mobilenet_v2 model"),
                      (["evaluate", "--compare", str(tmp_path / "nope.pt"), str(trained / "model.pt"), "--data",
                        str(tmp_path)], "no test split"),
                      (["evaluate", "--data", str(tmp_path)], "--checkpoint")):
        r = runner.invoke(app, args)
        lines = [x for x in r.output.strip().splitlines() if x.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], (args, r.output)
