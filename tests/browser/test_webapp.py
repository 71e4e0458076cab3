"""The station's web app in a real browser (Debian's Chromium, driven by Playwright): every page as each role,
20 reviews with the keyboard stored with the role's name, a threshold change with its preview (the preview's count
of changed verdicts is what the applied threshold then gives on those frames), deploy and rollback from the page,
and a viewer and an operator refused (403, audited) at every engineer action. Skips with the reason when Chromium or
Playwright is missing, as the window tests do."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKENS = {"viewer": "viewer-token-0001", "operator": "operator-token-01", "engineer": "engineer-token-01"}
PAGES = ("live", "history", "review", "recipes", "health", "audit")


def _need_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")


def station_file(tmp: Path, port: int, recipes: str, source: Path, evidence_extra: str = "") -> Path:
    """A station file with the three role tokens, a record, a model store and evidence under ``tmp``."""
    f = tmp / "st.toml"
    f.write_text(f"""version = 1
{recipes}[[sources]]
spec = "{source}"
[run]
headless = true
loop = true
threads = 1
[http]
bind = "127.0.0.1:{port}"
viewer_token = "{TOKENS['viewer']}"
operator_token = "{TOKENS['operator']}"
engineer_token = "{TOKENS['engineer']}"
[history]
db = "{tmp / 'h.db'}"
[store]
root = "{tmp / 'models'}"
[evidence]
folder = "{tmp / 'evidence'}"
{evidence_extra}""")
    return f


@pytest.fixture(scope="module")
def station(exported: Path, exported_memory: Path, synth_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    _need_browser()
    from helpers.line_parts import free_port

    tmp = tmp_path_factory.mktemp("webapp")
    port = free_port()
    video = synth_dir / "video.avi"
    station_file(tmp, port, f"""[[recipes]]
name = "tile"
index = 0
model = "{exported}"
[[recipes]]
name = "tile-b"
index = 1
model = "{exported}"
threshold = 1.5
""", video, "ok_every = 5\n")
    p = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--config", str(tmp / "st.toml")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if len(_api(base, "GET", "/api/results?verdict=NG&evidence=yes&limit=60", role="viewer")) >= 40:
                break
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline and p.poll() is None, p.stderr.read() if p.poll() is not None else "slow"
        time.sleep(0.5)
    yield {"base": base, "tmp": tmp, "proc": p, "bundle_b": exported_memory}
    p.terminate()
    p.communicate(timeout=60)


_sessions: dict[tuple[str, str], str] = {}


def _api(base: str, method: str, path: str, body: object = None, role: str = "viewer", raw: bytes | None = None):
    key = (base, role)
    if key not in _sessions:
        req = urllib.request.Request(base + "/api/login", data=json.dumps({"token": TOKENS[role]}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        _sessions[key] = json.loads(urllib.request.urlopen(req, timeout=10).read())["session"]
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"X-Session": _sessions[key], "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _browser():
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                                            "--disable-component-update", "--disable-sync", "--no-first-run"])
    return pw, b


def _login(b, base: str, role: str, width: int = 1280, height: int = 800):
    # the test's own probes (wait_for_function) evaluate strings, which the station's CSP forbids to any script not
    # its own: bypassed for the probes here; the CSP itself is tested in test_web_security.py
    page = b.new_page(viewport={"width": width, "height": height}, bypass_csp=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/app/live")
    page.wait_for_url("**/app/login**")
    page.fill("#token", TOKENS[role])
    page.click("button[type=submit]")
    page.wait_for_url("**/app/live")
    page.wait_for_function("document.body.dataset.role !== undefined")
    return page, errors


@contextlib.contextmanager
def _page_as(base: str, role: str, path: str):
    """A logged-in page of the web app at ``path`` in a fresh Chromium: (page, page errors)."""
    pw, b = _browser()
    try:
        page, errors = _login(b, base, role)
        page.goto(f"{base}{path}")
        yield page, errors
    finally:
        b.close()
        pw.stop()


def test_every_page_as_every_role(station, tmp_path: Path) -> None:
    pw, b = _browser()
    try:
        for role in TOKENS:
            page, errors = _login(b, station["base"], role)
            assert page.text_content("#role") == role
            page.wait_for_selector("#cam0 .verdict:not(:empty)")
            v = page.text_content("#cam0 .verdict")
            assert v in ("OK", "NG") and "frame" in page.text_content("#cam0 .score")
            for name in PAGES:
                page.goto(f"{station['base']}/app/{name}")
                page.wait_for_load_state("networkidle")
                time.sleep(0.5)
                page.screenshot(path=str(tmp_path / f"{role}_{name}.png"))
            page.goto(f"{station['base']}/app/history")
            page.wait_for_selector("#results tbody tr")
            assert page.locator("#results tbody tr").count() > 10
            page.goto(f"{station['base']}/app/recipes")
            page.wait_for_selector("#recipes h2")
            assert page.is_visible("#preview") == (role == "engineer"), role
            page.close()
            assert not errors, (role, errors)
    finally:
        b.close()
        pw.stop()


def test_twenty_reviews_with_the_keyboard(station) -> None:
    import sqlite3

    pw, b = _browser()
    try:
        page, errors = _login(b, station["base"], "operator")
        page.goto(f"{station['base']}/app/review")
        marked = []
        for i in range(20):
            page.wait_for_function("document.body.dataset.current")
            rid = page.evaluate("document.body.dataset.current")
            page.keyboard.press("g" if i % 2 else "d")
            page.wait_for_function(f"document.body.dataset.current !== {json.dumps(rid)}")
            marked.append((rid, "good" if i % 2 else "defect"))
        assert not errors, errors
    finally:
        b.close()
        pw.stop()
    con = sqlite3.connect(str(station["tmp"] / "h.db"))
    rows = {r[0]: r[1:] for r in con.execute("SELECT result_id, mark, who FROM reviews")}
    assert {rid: rows[rid][0] for rid, _ in marked} == dict(marked)
    assert all(rows[rid][1].startswith("operator@") for rid, _ in marked)


def test_review_shows_the_line_s_overlay_and_the_part_without_it(station, tmp_path: Path) -> None:
    """The Review page's picture is the overlay the live view drew for that part (the frame's shape, the overlay's
    colours and banner — not a square heatmap in another colour map), and O shows the part as captured."""
    import cv2
    import numpy as np

    pw, b = _browser()
    try:
        page, errors = _login(b, station["base"], "operator")
        page.goto(f"{station['base']}/app/review")
        page.wait_for_function("document.querySelector('.review-pic img') !== null")
        src = page.get_attribute(".review-pic img", "src")
        assert "/heat.jpg?" in src and "sig=" in src and "session" not in src, src
        page.keyboard.press("o")
        page.wait_for_function("document.querySelector('.review-pic').dataset.shows === 'part'")
        assert "/frame.png?" in page.get_attribute(".review-pic img", "src")
        page.keyboard.press("o")
        page.wait_for_function("document.querySelector('.review-pic').dataset.shows === 'overlay'")
        page.screenshot(path=str(tmp_path / "review.png"))
        assert not errors, errors
    finally:
        b.close()
        pw.stop()
    with urllib.request.urlopen(station["base"] + src, timeout=10) as r:  # the signed URL alone suffices
        over = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
    frame_src = src.replace("/heat.jpg?", "/frame.png?").split("?")[0]
    row = _api(station["base"], "GET", "/api/results?verdict=NG&evidence=yes&limit=1", role="viewer")[0]
    with urllib.request.urlopen(station["base"] + row["evidence"]["frame"], timeout=10) as r:
        frame = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
    assert frame_src.endswith("frame.png")
    assert abs(over.shape[1] / over.shape[0] - frame.shape[1] / frame.shape[0]) < 0.02, (over.shape, frame.shape)
    assert np.abs(over.astype(int) - cv2.resize(frame, over.shape[1::-1]).astype(int)).mean() > 1.0  # drawn on


def test_threshold_preview_equals_what_the_threshold_then_gives(station) -> None:
    import statistics

    probe = _api(station["base"], "POST", "/api/preview", {"recipe": "tile", "n": 40}, "engineer")
    # a threshold in the middle of the saved NG frames' scores: some verdicts change, some do not
    thr = round(statistics.median(i["now_score"] for i in probe["items"] if i["now"] == "NG"), 2)
    with _page_as(station["base"], "engineer", "/app/recipes") as (page, errors):
        page.wait_for_selector("#recipe-select option", state="attached")
        page.select_option("#recipe-select", "tile")
        page.fill("input[name=threshold]", str(thr))
        page.fill("input[name=n]", "40")
        # the last 40 saved frames move on while the station runs: the page's preview is computed between these two,
        # so its count lies between theirs (± 2)
        first = _api(station["base"], "POST", "/api/preview", {"recipe": "tile", "threshold": thr, "n": 40}, "engineer")
        page.click("#preview")
        page.wait_for_selector("#changed")
        changed = int(page.text_content("#changed"))
        before = _api(station["base"], "POST", "/api/preview", {"recipe": "tile", "threshold": thr, "n": 40}, "engineer")
        low, high = sorted((first["changed"], before["changed"]))
        page.click("#apply")
        page.wait_for_function("document.querySelector('#apply').disabled")
        assert not errors, errors
    after = _api(station["base"], "POST", "/api/preview", {"recipe": "tile", "threshold": thr, "n": 40}, "engineer")
    assert 0 < before["changed"] < before["frames"] and low - 2 <= changed <= high + 2, (changed, first, before)
    assert after["changed"] == 0, "the applied threshold gives what the preview said"
    now = {i["result_id"]: i["now"] for i in after["items"]}
    assert all(now[i["result_id"]] == i["proposed"] for i in before["items"] if i["result_id"] in now)
    _api(station["base"], "POST", "/api/recipe-settings", {"recipe": "tile", "threshold": 1.0}, "engineer")


def test_deploy_and_rollback_from_the_page(station) -> None:
    with _page_as(station["base"], "engineer", "/app/recipes") as (page, errors):
        page.wait_for_selector("#deploy-recipe option", state="attached")
        page.select_option("#deploy-recipe", "tile-b")
        files = [str(p) for p in sorted(Path(station["bundle_b"]).iterdir()) if p.is_file()]
        page.set_input_files("#bundle", files)
        page.click("#deploy button[type=submit]")
        page.wait_for_function("document.querySelector('#deploy-result').textContent.includes('live') || "
                               "document.querySelector('#toast').textContent", timeout=60000)
        assert "v0 → v1 live" in page.text_content("#deploy-result"), page.text_content("#toast")
        page.click("button[data-rollback='tile-b']")
        page.wait_for_function("document.querySelector('#toast').textContent.includes('v1 → v0')", timeout=60000)
        assert not errors, errors
    versions = _api(station["base"], "GET", "/api/recipes", role="viewer")
    tb = next(r for r in versions if r["name"] == "tile-b")
    assert tb["version"] == 0 and [v["status"] for v in tb["versions"]] == ["live", "retired"]


def test_viewer_and_operator_are_refused_every_engineer_action(station) -> None:
    actions = [("POST", "/api/preview", {"recipe": "tile", "threshold": 2.0}), ("POST", "/api/recipe-settings",
               {"recipe": "tile", "threshold": 2.0}), ("POST", "/api/deploy?recipe=tile", None),
               ("POST", "/api/rollback?recipe=tile", None), ("POST", "/api/collect", {"count": 3}),
               ("GET", "/api/collect.zip", None), ("GET", "/api/dataset?recipe=tile", None),
               ("POST", "/api/recipes", {"name": "not-by-them"})]
    for role in ("viewer", "operator"):
        for method, path, body in actions:
            with pytest.raises(urllib.error.HTTPError) as e:
                _api(station["base"], method, path, body, role, raw=b"" if body is None and method == "POST" else None)
            assert e.value.code == 403, (role, path)
    with pytest.raises(urllib.error.HTTPError) as e:
        _api(station["base"], "POST", "/api/review", {"result_id": "x", "mark": "good"}, "viewer")
    assert e.value.code == 403
    audit = _api(station["base"], "GET", "/api/audit?limit=500", role="engineer")
    refused = [a for a in audit if a["outcome"] == "refused" and a["who"].split("@")[0] in ("viewer", "operator")]
    assert len(refused) >= 15, refused


def test_collect_good_parts_from_the_page(station, tmp_path: Path) -> None:
    """The engineer collects the next 5 parts of the running station from the Recipes page and downloads them: raw
    frames in MVTec layout with a contact sheet, the station inspecting all the while."""
    import zipfile

    with _page_as(station["base"], "engineer", "/app/recipes") as (page, errors):
        page.wait_for_selector("#collect button[type=submit]")
        page.fill("#collect input[name=count]", "5")
        page.click("#collect button[type=submit]")
        page.wait_for_function("document.body.dataset.collect === 'done'", timeout=60000)
        with page.expect_download() as dl:
            page.click("#collect-download")
        dl.value.save_as(str(tmp_path / "c.zip"))
        assert not errors, errors
    with zipfile.ZipFile(tmp_path / "c.zip") as z:
        names = z.namelist()
    assert len([n for n in names if "/train/good/" in n and n.endswith(".png")]) == 5, names
    assert any(n.endswith("contact_sheet.jpg") for n in names)
    st = _api(station["base"], "GET", "/api/collect")
    assert st["state"] == "done" and st["kept"] == 5 and st["recipe"] in ("tile", "tile-b")


def test_fit_on_the_box_from_the_page(station, tmp_path: Path) -> None:
    """Learning on the box from the Recipes page: the engineer collects 20 parts, fits them (progress, then the report
    card: the no-defect check, the good parts on the score scale, the thresholds), and deploys the result as the
    recipe's next version — the station running all the while. Screenshots: $EDGE_STPM_SCREENSHOTS (else tmp)."""
    import os

    from conftest import SIZE
    from edge_stpm.common.files import data_dir
    from edge_stpm.training.export.teacher_pack import write_teacher_pack

    shots = Path(os.environ.get("EDGE_STPM_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    if not (data_dir() / "teacher" / "teacher.json").is_file():  # the station's data folder: the same XDG_DATA_HOME
        write_teacher_pack(data_dir() / "teacher", "mobilenet_v2", SIZE)
    base = station["base"]
    active = next(r["name"] for r in _api(base, "GET", "/api/recipes", role="engineer") if r["active"])
    before = max(v["version"] for r in _api(base, "GET", "/api/recipes", role="engineer") if r["name"] == active
                 for v in r["versions"])
    _api(base, "POST", "/api/collect", {"count": 20, "min_change": 0}, "engineer")
    deadline = time.monotonic() + 60
    while _api(base, "GET", "/api/collect", role="engineer")["state"] != "done":
        assert time.monotonic() < deadline, "collecting 20 parts took over 60 s"
        time.sleep(0.5)
    with _page_as(base, "engineer", "/app/recipes") as (page, errors):
        page.wait_for_selector("#fit button[type=submit]")
        page.select_option("#fit-recipe", active)
        page.click("#fit button[type=submit]")
        page.wait_for_function("document.body.dataset.fit === 'done'", timeout=180000)
        card = page.text_content("#fit-card")
        assert "no-defect check" in card and "score scale" in card and "20 (4 held out" in card, card
        page.locator("#fit-card").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "fit_report_card.png"), full_page=True)
        page.click("#fit-deploy")
        page.wait_for_selector("#toast:has-text('is live')")
        page.screenshot(path=str(shots / "fit_deployed.png"), full_page=True)
        assert not errors, errors
    after = max(v["version"] for r in _api(base, "GET", "/api/recipes", role="engineer") if r["name"] == active
                for v in r["versions"])
    assert after == before + 1
    audit = _api(base, "GET", "/api/audit?limit=500", role="engineer")
    assert any(a["action"] == "deploy" and a["outcome"] == "ok" and a["who"].startswith("engineer") for a in audit)
