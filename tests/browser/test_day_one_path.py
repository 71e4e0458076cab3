"""The whole day-one path in one station process and one Chromium session, as a new user clicks it (issue 40):
a box whose only recipe has **no model yet** (the PLC sees error 7 and no Trigger Ready, /healthz 503, nothing
judged) → the engineer collects 100 good parts on the Recipes page → fits them there → reads the report card →
deploys it (v1: Trigger Ready, /healthz 200, the next parts judged by v1) → a new material batch arrives (the parts
drift: every good one is a false call of v1) → the operator reviews 16 of them on the Review page with the keyboard →
the engineer updates v1 with the reviewed good parts → reads the update's report card → deploys it (v2: fewer false
calls on the same parts) → rolls back to v1 (v1 judges again). Every step's audit row is checked at the end.

The parts: 100 distinct synthetic good parts (``SynthConfig(n_train=100)``, the product's own generator, another
seed than the session's set) as an image folder the station reads in a loop; the drifted batch replaces the same
files (96 good parts brightened, 4 defects). 100 parts collected, as the issue says: measured 2026-12-07 on this
2-core AMD EPYC (shared, nice 10) over 6 runs, collect 100 in 4.2 s (the no-model loop reads the folder at 30
frames/s), the fit 2–7 s, the update 4–6 s, the whole test 43–62 s in pytest (56 s in the browser group run)
— no reason to collect fewer.

Bounds, and what the 6 runs gave: v1 on the good parts it learned ≤ 10 % NG (0–1.5 %); v1 on the drifted good parts
≥ 90 % NG (100 % each time); v2 on them ≤ 35 % NG and every defect NG (``_judged_better`` of the feedback-cycle
tests; 2.8–23.3 %: which 16 parts are reviewed depends on timing, and so does what v2 learned).

Screenshots (1280 wide, $EDGE_STPM_SCREENSHOTS, else the test's folder): ``day_one_path_1_no_model.png`` …
``day_one_path_7_audit.png``, committed in docs/webapp/."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

N_PARTS = 100  # the number: measured fast enough here (module docstring)
N_REVIEW = 16
# the "Learn a new version" card at the top of the window, below the sticky header: its buttons and report card
SHOW_FIT = "document.querySelector('#fit').closest('section').scrollIntoView(); window.scrollBy(0, -60)"


def _rows(api, base: str, **q: str) -> list[dict]:
    return api(base, "GET", "/api/results?limit=5000" + "".join(f"&{k}={v}" for k, v in q.items()))


def test_day_one_path_no_model_to_rollback(synth_dir: Path, tmp_path: Path) -> None:
    from conftest import SIZE
    from edge_stpm.common.files import data_dir
    from edge_stpm.runtime.line import plc
    from edge_stpm.training.export.teacher_pack import write_teacher_pack
    from edge_stpm.training.synth import SynthConfig, generate
    from helpers.line_parts import drifted_parts, free_port
    from test_day_one import _health, _registers, _start, _wait
    from test_feedback_cycle import _judged_better, review
    from test_webapp import _api, _browser, _login, _need_browser, station_file

    _need_browser()
    if not (data_dir() / "teacher" / "teacher.json").is_file():  # the box's own pack (the station's XDG_DATA_HOME)
        write_teacher_pack(data_dir() / "teacher", "mobilenet_v2", SIZE)
    shots = Path(os.environ.get("EDGE_STPM_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    generate(tmp_path / "line", SynthConfig(size=SIZE, n_train=N_PARTS, n_test_good=0, n_test_defect=2,
                                            video_frames=3, seed=40))
    goods = sorted((tmp_path / "line" / "train" / "good").glob("*.png"))
    defects = [p for p in sorted((tmp_path / "line" / "test").glob("*/*.png")) if p.parent.name != "good"][:4]
    parts = tmp_path / "parts"  # the camera: one file per part, in a loop
    parts.mkdir()
    for i, g in enumerate(goods):
        shutil.copy(g, parts / f"{i:03d}.png")
    port, modbus = free_port(), free_port()
    station_file(tmp_path, port, '[[recipes]]\nname = "part"\nindex = 0\n', parts)
    with open(tmp_path / "st.toml", "a") as fh:
        fh.write(f'[modbus]\nbind = "127.0.0.1:{modbus}"\n')
    base = f"http://127.0.0.1:{port}"
    t: dict[str, float] = {}
    p = _start(tmp_path)
    pw, b = _browser()
    try:
        # 1. no model: the PLC, /healthz, the record, the live view and the Recipes page say so
        _wait(lambda: _health(base)[0] == 503 and "no model yet" in _health(base)[1], 90, p)
        regs = _registers(modbus)
        assert not regs[plc.STATUS] & plc.BIT_TRIGGER_READY and regs[plc.ERROR_CODE] == plc.ERR_NO_MODEL, regs
        assert _rows(_api, base) == []
        page, errors = _login(b, base, "engineer")  # lands on the Live page
        page.wait_for_selector("#cam0 .verdict:has-text('NO MODEL')")
        page.goto(f"{base}/app/recipes")
        page.wait_for_selector("#recipes:has-text('no model yet')")
        assert "no version yet" in page.text_content("#recipes")
        assert page.locator("[data-rollback]").count() == 0  # no version, nothing to roll back to
        page.screenshot(path=str(shots / "day_one_path_1_no_model.png"), full_page=True)

        # 2. collect 100 good parts (every frame is a new part here: no near-duplicate to skip)
        t0 = time.monotonic()
        page.fill("#collect input[name=count]", str(N_PARTS))
        page.fill("#collect input[name=min_change]", "0")
        page.click("#collect button[type=submit]")
        page.wait_for_function("document.body.dataset.collect === 'done'", timeout=120000)
        t["collect"] = time.monotonic() - t0
        assert f"done: {N_PARTS} of {N_PARTS} kept (0 near-duplicates skipped)" in page.text_content("#collect-status")
        assert _rows(_api, base) == []  # collecting judges nothing

        # 3. fit on the box, then the report card
        t0 = time.monotonic()
        page.select_option("#fit-recipe", "part")
        page.click("#fit button[type=submit]")
        page.wait_for_function("document.body.dataset.fit === 'done'", timeout=300000)
        t["fit"] = time.monotonic() - t0
        fit = _api(base, "GET", "/api/fit", role="engineer")
        c = fit["card"]
        assert (fit["kind"], fit["recipe"], c["images"], c["held_out"]) == ("fit", "part", N_PARTS, N_PARTS // 5), fit
        assert c["no_defect_check"] >= 0.9 and all(v >= 0.8 for v in c["no_defect_kinds"].values()), c
        # the scale's 0 is the held-out good parts' median by definition; their p95 may pass 1 (the threshold is logsigma
        # k 2 of 20 parts: the CI dry run saw 1.083), so only the order is checked
        assert abs(c["good_p50"]) < 1e-3 and c["good_p95"] >= c["good_p50"], c
        assert c["image_threshold"] > 0 and c["pixel_threshold"] > 0, c
        assert 0 < c["entries"] and c.get("update") is None and c.get("compare") is None, c
        card = page.text_content("#fit-card")
        for shown in (f"{N_PARTS} ({N_PARTS // 5} held out for the thresholds)", f"{c['entries']} entries",
                      f"median {c['good_p50']:.3f}, p95 {c['good_p95']:.3f}", f"{c['no_defect_check']:.3f}"):
            assert shown in card, (shown, card)
        page.evaluate(SHOW_FIT)
        page.screenshot(path=str(shots / "day_one_path_2_report_card.png"))

        # 4. deploy v1: the PLC is ready, /healthz 200, the next parts judged by v1
        page.click("#fit-deploy")
        page.wait_for_selector("#toast:has-text('part: v1 is live')")
        page.wait_for_selector("#fit-card", state="hidden")
        _wait(lambda: _health(base)[0] == 200, 30, p)
        regs = _registers(modbus)
        assert regs[plc.STATUS] & plc.BIT_TRIGGER_READY and regs[plc.ERROR_CODE] == plc.ERR_NONE, regs
        r = _api(base, "GET", "/api/recipes")[0]
        assert (r["version"], r["has_model"], [v["version"] for v in r["versions"]]) == (1, True, [1]), r
        v1 = r["model_sha256"]
        _wait(lambda: len(_rows(_api, base)) >= 40, 60, p)
        judged = _rows(_api, base)
        assert {x["model_sha256"] for x in judged} == {v1}
        ng = sum(x["verdict"] == "NG" for x in judged) / len(judged)
        print(f"v1 on the good parts: {ng:.1%} NG of {len(judged)}")
        assert ng <= 0.1, f"v1 called {ng:.0%} of the good parts it learned NG"  # measured: see the report
        page.goto(f"{base}/app/live")
        page.wait_for_selector("#cam0 .verdict.OK")  # what nearly every part gets (asserted above)
        page.wait_for_selector("#cam0 .recipe:has-text('recipe part')")
        page.screenshot(path=str(shots / "day_one_path_3_judged.png"), full_page=True)

        # 5. a new material batch: the same files now hold drifted parts; the operator reviews the false calls
        t_swap = time.time()
        truth = drifted_parts(goods[: N_PARTS - len(defects)], defects, parts)
        settled = t_swap + 3.0  # a row judged after this read its file after the swap (8 frames read ahead)

        def truth_of(row: dict) -> str:
            assert row["time"] > settled, ("a part read around the swap reached the review", row)
            return truth[row["frame"] % len(truth)]

        _wait(lambda: sum(x["time"] > settled for x in _rows(_api, base, verdict="NG", evidence="yes")) >= 40, 90, p)
        drifted = [x for x in _rows(_api, base) if x["time"] > settled]
        goods_ng = [x["verdict"] == "NG" for x in drifted if truth[x["frame"] % len(truth)] == "good"]
        print(f"v1 on the drifted good parts: {sum(goods_ng) / len(goods_ng):.1%} NG of {len(goods_ng)}")
        assert sum(goods_ng) / len(goods_ng) >= 0.9, "the drifted good parts are false calls of v1"
        before, after = review(b, base, truth_of, N_REVIEW, shots / "day_one_path_4_review.png")
        assert before >= N_REVIEW and after == before - N_REVIEW, (before, after)
        marked = _rows(_api, base, reviewed="yes")
        assert len(marked) == N_REVIEW and all(x["review"]["mark"] == truth_of(x) for x in marked), marked
        assert {x["review"]["who"].split("@")[0] for x in marked} == {"operator"}, marked
        n_good = sum(x["review"]["mark"] == "good" for x in marked)

        # 6. update v1 with the reviewed good parts, its report card, deploy v2
        page.goto(f"{base}/app/recipes")
        page.wait_for_selector("#fit-recipe option", state="attached")
        page.select_option("#fit-recipe", "part")
        t0 = time.monotonic()
        page.click("#fit-reviewed")
        page.wait_for_function("document.body.dataset.fit === 'done'", timeout=300000)
        t["update"] = time.monotonic() - t0
        upd = _api(base, "GET", "/api/fit", role="engineer")
        c = upd["card"]
        assert upd["kind"] == "update" and c["compare"]["good"] == n_good, upd
        assert c["compare"]["defects"] == N_REVIEW - n_good, upd
        assert c["compare"]["new"]["good_ng"] < c["compare"]["live"]["good_ng"], c["compare"]
        assert c["update"]["entries_before"] == fit["card"]["entries"], c["update"]
        card = page.text_content("#fit-card")
        assert (f"{c['compare']['live']['good_ng']} → {c['compare']['new']['good_ng']} of {n_good}" in card
                and f"{c['update']['entries_before']} → {c['update']['entries_after']} entries" in card), card
        held = c["compare"]["held_out_good"]  # the reviewed good parts the update did not learn: the fair figure
        # the dataset holds a part out by its id's hash (a share of 0.2), at least one of two or more: exactly the
        # parts the dataset's own split names
        from edge_stpm.runtime.learn.dataset import _held_ids

        want = _held_ids([{"result_id": x["result_id"], "mark": x["review"]["mark"]} for x in marked], 0.2)
        assert held == len(want) and 1 <= held < n_good, (c["compare"], want)
        assert (f"{c['compare']['live']['held_out_good_ng']} → {c['compare']['new']['held_out_good_ng']} of {held}"
                in card), card
        page.evaluate(SHOW_FIT)
        page.screenshot(path=str(shots / "day_one_path_5_update_card.png"))
        page.set_viewport_size({"width": 390, "height": 844})  # the same card on a phone
        page.evaluate(SHOW_FIT)
        page.screenshot(path=str(shots / "day_one_path_5_update_card_390.png"))
        page.set_viewport_size({"width": 1280, "height": 800})
        page.click("#fit-deploy")
        page.wait_for_selector("#toast:has-text('part: v2 is live')")
        r = _api(base, "GET", "/api/recipes")[0]
        assert r["version"] == 2 and [v["version"] for v in r["versions"]] == [1, 2], r
        v2 = r["model_sha256"]
        assert v2 != v1
        deadline = time.monotonic() + 90
        while len(by_v2 := [x for x in _rows(_api, base) if x["model_sha256"] == v2]) < 40:
            assert time.monotonic() < deadline and p.poll() is None, "v2 judged too few parts"
            time.sleep(0.5)
        g2 = [x["verdict"] == "NG" for x in by_v2 if truth[x["frame"] % len(truth)] == "good"]
        print(f"v2 on the drifted good parts: {sum(g2) / len(g2):.1%} NG of {len(g2)}")
        _judged_better(by_v2, truth)  # fewer false calls on the same drifted parts, every defect still NG

        # 7. roll back to v1 from the page: v1 judges again
        page.wait_for_selector("[data-rollback='part']")
        assert page.text_content("[data-rollback='part']") == "roll back to v1, the version that ran before"
        t_back = time.time()
        page.click("[data-rollback='part']")
        page.wait_for_selector("#toast:has-text('part: v2 → v1')")
        page.wait_for_selector("#recipes tbody tr:has-text('v1'):has-text('live')")
        assert _api(base, "GET", "/models.json")["part"]["loaded"] == 1
        r = _api(base, "GET", "/api/recipes")[0]
        assert (r["version"], r["model_sha256"], r["rollback_to"]) == (1, v1, None), r
        assert page.locator("[data-rollback]").count() == 0  # v1 was the first: nothing before it
        status = {v["version"]: v["status"] for v in r["versions"]}
        assert status[1] == "live" and status[2] != "live", status
        page.screenshot(path=str(shots / "day_one_path_6_rolled_back.png"), full_page=True)
        _wait(lambda: any(x["model_sha256"] == v1 and x["time"] > t_back + 1 for x in _rows(_api, base)), 30, p)
        regs = _registers(modbus)
        assert regs[plc.STATUS] & plc.BIT_TRIGGER_READY and regs[plc.ERROR_CODE] == plc.ERR_NONE, regs

        # 8. the audit log: who did what, in order
        audit = _api(base, "GET", "/api/audit?limit=500")[::-1]  # oldest first
        steps = [(a["action"], a["who"].split("@")[0], a["outcome"]) for a in audit
                 if a["action"] in ("collect", "fit", "update", "deploy", "rollback")]
        assert steps == [("collect", "engineer", "ok"), ("fit", "engineer", "ok"), ("deploy", "engineer", "ok"),
                         ("update", "engineer", "ok"), ("deploy", "engineer", "ok"),
                         ("rollback", "engineer", "ok")], steps
        deploys = [a for a in audit if a["action"] == "deploy"]
        assert [a["after"]["version"] for a in deploys] == [1, 2], deploys
        assert all("fit on the box" in a["detail"] for a in deploys), deploys
        back = next(a for a in audit if a["action"] == "rollback")
        assert (back["before"]["version"], back["after"]["version"]) == (2, 1), back
        reviews = [a for a in audit if a["action"] == "review"]
        assert len(reviews) == N_REVIEW and {a["who"].split("@")[0] for a in reviews} == {"operator"}, reviews
        page.goto(f"{base}/app/audit")
        page.wait_for_selector("#audit tbody tr:has-text('rollback')")
        page.screenshot(path=str(shots / "day_one_path_7_audit.png"))
        assert not errors, errors
    finally:
        b.close()
        pw.stop()
        p.terminate()
        try:
            p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
        print("seconds:", {k: round(v, 1) for k, v in t.items()})
