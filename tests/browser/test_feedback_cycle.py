"""The whole feedback cycle through the web app in a real browser (issue 30): a station whose good parts drifted
(a new material batch: every one is a false call of its memory-bank model) → an operator reviews 16 results with
the keyboard, each marked as what it really is → the engineer downloads the dataset from the Recipes page →
update-memory and export (the workstation's part, here the same machine) → evaluate --compare → the engineer
deploys the new bundle from the page → the station's next results on the same parts are judged by the new model,
and its false calls on the reviewed good parts are fewer than the old one's."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
from typer.testing import CliRunner

from edge_stpm.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@contextlib.contextmanager
def drifted_station(model: Path, synth_dir: Path, tmp_path: Path) -> Iterator[tuple[str, dict[int, str]]]:
    """A station judging drifted parts (24 good ones brightened — a new material batch — and 4 defects, in a loop)
    with ``model``: yields its URL and each frame's truth once 40 NG results with evidence are in; stopped after."""
    from helpers.line_parts import drifted_parts, free_port
    from test_webapp import _api, _need_browser, station_file

    _need_browser()
    parts = tmp_path / "parts"
    goods = sorted((synth_dir / "train" / "good").glob("*.png"))[:24]
    defects = [p for p in sorted((synth_dir / "test").glob("*/*.png")) if p.parent.name != "good"][:4]
    truth = drifted_parts(goods, defects, parts)  # the folder's order is the frame order
    port = free_port()
    station_file(tmp_path, port, f'[[recipes]]\nname = "tile"\nindex = 0\nmodel = "{model}"\n', parts)
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--config", str(tmp_path / "st.toml")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if len(_api(base, "GET", "/api/results?verdict=NG&evidence=yes&limit=60")) >= 40:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and p.poll() is None, "the station did not come up"
            time.sleep(0.5)
        yield base, truth
        p.terminate()
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()


def review(b, base: str, truth, n: int = 16, shot: Path | None = None) -> tuple[int, int]:
    """The operator reviews ``n`` results on the Review page with the keyboard, each marked as what it really is:
    ``truth`` is each frame's truth by file index (``truth[frame % len(truth)]``) or a function of the result row.
    ``shot``: a screenshot of the page as it opened. Returns the page's queue count ("… of K to review") as it
    opened and after the ``n`` marks."""
    from test_webapp import _api, _login

    truth_of = truth if callable(truth) else (lambda row: truth[row["frame"] % len(truth)])
    page, errors = _login(b, base, "operator")
    page.goto(f"{base}/app/review")
    page.wait_for_function("document.body.dataset.current")
    count = lambda: int(page.text_content("#queue-count").split(" of ")[1].split()[0])  # noqa: E731
    before = count()
    if shot is not None:
        page.screenshot(path=str(shot))
    for _ in range(n):
        page.wait_for_function("document.body.dataset.current")
        rid = page.evaluate("document.body.dataset.current")
        row = next(r for r in _api(base, "GET", "/api/results?limit=5000") if r["result_id"] == rid)
        page.keyboard.press("g" if truth_of(row) == "good" else "d")
        page.wait_for_function(f"document.body.dataset.current !== {json.dumps(rid)}")
    after = count()
    assert not errors, errors
    page.close()
    return before, after


def _judged_better(after: list[dict], truth: dict[int, str]) -> None:
    """The station's own verdicts on the same drifted parts after the deploy (the new model): the old one called
    every good part NG (that is how the review queue filled); at most 35 % now, every defect still NG. Measured
    2026-12-07 over 7 runs of the two tests: 0 to 21 % (the 16 parts reviewed differ from run to run — the review
    queue's order depends on timing — and so does what the new model learned); the bound leaves room for that."""
    goods_after = [r for r in after if truth[r["frame"] % len(truth)] == "good"]
    assert goods_after, "results of the new model on good parts"
    assert sum(r["verdict"] == "NG" for r in goods_after) / len(goods_after) <= 0.35
    assert all(r["verdict"] == "NG" for r in after if truth[r["frame"] % len(truth)] == "defect")


def test_review_dataset_update_compare_deploy_in_the_browser(trained_memory: Path, exported_memory: Path,
                                                             synth_dir: Path, tmp_path: Path) -> None:
    from test_webapp import _api

    with drifted_station(exported_memory, synth_dir, tmp_path) as (base, truth):
        old_sha = _api(base, "GET", "/api/recipes")[0]["model_sha256"]
        _cycle_in_browser(base, truth, trained_memory, exported_memory, tmp_path)
        after = _new_results(base, old_sha)
    _judged_better(after, truth)


def _cycle_in_browser(base: str, truth: dict[int, str], ckpt_run: Path, old_bundle: Path, tmp: Path) -> None:
    from edge_stpm.runtime.inspector import Inspector
    from test_webapp import _browser, _login

    pw, b = _browser()
    try:
        review(b, base, truth)
        page, errors = _login(b, base, "engineer")
        page.goto(f"{base}/app/recipes")
        page.wait_for_selector("#dataset-recipe option", state="attached")
        with page.expect_download() as dl:
            page.click("#dataset button[type=submit]")
        zpath = tmp / "dataset.zip"
        dl.value.save_as(str(zpath))
        page.wait_for_function("document.querySelector('#dataset-result').textContent.includes('downloaded')")
        with zipfile.ZipFile(zpath) as z:
            z.extractall(tmp / "ds")
        data = tmp / "ds" / "tile-reviewed"
        manifest = json.loads((data / "manifest.json").read_text())
        assert sum(manifest["counts"].values()) == 16
        new_ckpt, new_bundle = tmp / "new.pt", tmp / "new_bundle"
        r = runner.invoke(app, ["update-memory", "--checkpoint", str(ckpt_run / "model.pt"), "--data", str(data),
                                "--out", str(new_ckpt), "--quiet"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["export", "--checkpoint", str(new_ckpt), "--precision", "fp32", "--out",
                                str(new_bundle), "--quiet"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["evaluate", "--compare", str(old_bundle), str(new_bundle), "--data", str(data),
                                "--out", str(tmp / "cmp")])
        assert r.exit_code == 0 and (tmp / "cmp" / "compare.png").is_file(), r.output
        # fewer false calls on the reviewed good parts (all of them, train/ and test/)
        reviewed_goods = sorted((data / "train" / "good").glob("*.png")) + sorted((data / "test" / "good").glob("*.png"))
        fc = {}
        for name, model in (("old", old_bundle), ("new", new_bundle)):
            insp = Inspector.load(model)
            fc[name] = sum(insp.inspect(cv2.imread(str(g))).ng for g in reviewed_goods)
            insp.close()
        assert fc["new"] < fc["old"], fc
        page.select_option("#deploy-recipe", "tile")
        page.set_input_files("#bundle", [str(x) for x in sorted(new_bundle.iterdir()) if x.is_file()])
        page.click("#deploy button[type=submit]")
        page.wait_for_function("document.querySelector('#deploy-result').textContent.includes('live') || "
                               "document.querySelector('#toast').textContent", timeout=60000)
        assert "v0 → v1 live" in page.text_content("#deploy-result"), page.text_content("#toast")
        assert not errors, errors
    finally:
        b.close()
        pw.stop()


def _new_results(base: str, old_sha: str) -> list[dict]:
    from test_webapp import _api

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = [r for r in _api(base, "GET", "/api/results?limit=5000") if r["model_sha256"] != old_sha]
        if len(rows) >= 40:
            return rows
        time.sleep(0.5)
    raise AssertionError("the new model judged too few parts")


def test_the_feedback_cycle_closes_on_the_box(mobilenet_weights: None, synth_dir: Path, tmp_path: Path) -> None:
    """The same drifted line, with a model the box fitted itself (it carries its teacher pack): the operator reviews
    16 results in the browser; the engineer clicks "update with reviewed good parts" on the Recipes page — no
    download, no workstation — reads the report card (both models on the reviewed parts), deploys the update as v1,
    the station's next results on the same parts come from it with fewer false calls, then rolls back to v0 from the
    page. Screenshot: update_report_card.png ($EDGE_STPM_SCREENSHOTS). Bound: as the workstation cycle above
    (``_judged_better``)."""
    from conftest import SIZE
    from edge_stpm.runtime.learn.fit import FitConfig, fit
    from edge_stpm.training.export.teacher_pack import write_teacher_pack
    from test_webapp import _api

    write_teacher_pack(tmp_path / "pack", "mobilenet_v2", SIZE)
    fitted = tmp_path / "fitted"
    fit(FitConfig(tmp_path / "pack", synth_dir, fitted))
    with drifted_station(fitted, synth_dir, tmp_path) as (base, truth):
        old_sha = _api(base, "GET", "/api/recipes")[0]["model_sha256"]
        _on_the_box_in_browser(base, truth, lambda: _new_results(base, old_sha), tmp_path)


def _on_the_box_in_browser(base: str, truth: dict[int, str], after_deploy, tmp: Path) -> None:
    from test_webapp import _api, _browser, _login

    pw, b = _browser()
    try:
        review(b, base, truth)
        page, errors = _login(b, base, "engineer")
        page.goto(f"{base}/app/recipes")
        page.wait_for_selector("#fit-recipe option", state="attached")
        page.select_option("#fit-recipe", "tile")
        page.click("#fit-reviewed")
        page.wait_for_function("document.body.dataset.fit === 'done'", timeout=180000)
        card = page.text_content("#fit-card")
        assert "reviewed good parts judged NG" in card and "reviewed good parts added" in card, card
        page.locator("#fit-card").scroll_into_view_if_needed()
        shots = Path(os.environ.get("EDGE_STPM_SCREENSHOTS", tmp))
        page.screenshot(path=str(shots / "update_report_card.png"), full_page=True)
        page.click("#fit-deploy")
        page.wait_for_function("document.querySelector('#toast').textContent.includes('is live')", timeout=60000)
        _judged_better(after_deploy(), truth)
        page.goto(f"{base}/app/recipes")
        page.wait_for_selector("[data-rollback]")
        page.click("[data-rollback='tile']")
        page.wait_for_function("document.querySelector('#toast').textContent.includes('v1 → v0')", timeout=60000)
        assert _api(base, "GET", "/models.json")["tile"]["loaded"] == 0
        assert not errors, errors
    finally:
        b.close()
        pw.stop()
