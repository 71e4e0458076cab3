"""The Recipes page's controls for the recipe set, in Chromium: an engineer makes a recipe active with its "make
active" button, renames a recipe created on the box and gives it another PLC index, and deletes it with its "delete"
button — a confirmation first (cancelled: nothing happens; accepted: it is gone and its PLC index free). A viewer and
an operator see none of these controls, and the API refuses them (403). Screenshots of the page with the controls at
desktop and phone width: $EDGE_STPM_SCREENSHOTS/recipes_manage_1280.png and recipes_manage_390.png (else the test's
folder)."""
from __future__ import annotations

import os
import urllib.error
from pathlib import Path

from helpers.line_parts import free_port
from test_day_one import _health, _start, _stop, _wait
from test_webapp import _api, _need_browser, _page_as, station_file

CARD = "#recipes .card:has(h2:text-is('{}'))"  # a recipe's card (h2's own text is the name)


def _active(base: str) -> str:
    return next(r["name"] for r in _api(base, "GET", "/api/recipes") if r["active"])


def _refused(base: str, role: str, method: str, path: str) -> int:
    try:
        _api(base, method, path, role=role)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def test_make_active_rename_and_delete_from_the_page(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    _need_browser()
    shots = Path(os.environ.get("EDGE_STPM_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    port = free_port()
    station_file(tmp_path, port, f'[[recipes]]\nname = "part-a"\nindex = 0\nmodel = "{exported}"\n',
                 synth_dir / "train" / "good")
    base = f"http://127.0.0.1:{port}"
    p = _start(tmp_path)
    try:
        _wait(lambda: _health(base)[0] == 200, 90, p)
        for name, index in (("part-b", 1), ("part-c", 2)):
            _api(base, "POST", "/api/recipes", {"name": name, "plc_index": index}, role="engineer")
        for role in ("viewer", "operator"):  # no controls on their page; the API refuses them
            with _page_as(base, role, "/app/recipes") as (page, errors):
                page.wait_for_selector("#recipes:has-text('part-c')")
                assert "created on the box by engineer@" in page.text_content(CARD.format("part-b"))
                for sel in ("button[data-activate]", "button[data-delete]", "form.edit-recipe"):
                    assert page.locator(sel).count() > 0 and not any(
                        page.locator(sel).nth(i).is_visible() for i in range(page.locator(sel).count())), (role, sel)
                assert not errors, errors
            for method, path in (("POST", "/api/recipe/active?name=part-b"), ("DELETE", "/api/recipes/part-c"),
                                 ("POST", "/api/recipes/part-c")):
                assert _refused(base, role, method, path) == 403, (role, method, path)

        with _page_as(base, "engineer", "/app/recipes") as (page, errors):
            page.wait_for_selector("#recipes:has-text('part-c')")
            assert page.locator(f"{CARD.format('part-a')} button[data-activate]").count() == 0  # it is active
            assert page.locator(f"{CARD.format('part-a')} button[data-delete]").count() == 0  # the station file's
            page.click(f"{CARD.format('part-b')} button[data-activate]")
            page.wait_for_selector(f"{CARD.format('part-a')} button[data-activate]")
            assert _active(base) == "part-b"
            assert "make another one active to rename or delete it" in page.text_content(CARD.format("part-b"))
            assert page.locator(f"{CARD.format('part-b')} button[data-delete]").count() == 0

            page.click(f"{CARD.format('part-c')} summary")
            page.fill(f"{CARD.format('part-c')} input[name=name]", "part-d")
            page.fill(f"{CARD.format('part-c')} input[name=plc_index]", "7")
            page.click(f"{CARD.format('part-c')} form.edit-recipe button[type=submit]")
            page.wait_for_selector(CARD.format("part-d"))
            assert "index 7" in page.text_content(CARD.format("part-d") + " h2")
            page.click(f"{CARD.format('part-d')} summary")  # open, for the screenshots
            page.wait_for_selector("#toast", state="hidden")
            for width in (1280, 390):  # the header and the recipes' cards (a phone on the line: 390)
                page.set_viewport_size({"width": width, "height": 844})
                bottom = page.locator("#recipes").bounding_box()["y"] + page.locator("#recipes").bounding_box()["height"]
                page.screenshot(path=str(shots / f"recipes_manage_{width}.png"), full_page=True,
                                clip={"x": 0, "y": 0, "width": width, "height": bottom + 16})
            page.set_viewport_size({"width": 1280, "height": 800})

            said: list[str] = []
            page.once("dialog", lambda d: (said.append(d.message), d.dismiss()))
            page.click(f"{CARD.format('part-d')} button[data-delete]")
            page.wait_for_timeout(500)
            assert said and said[0].startswith("Delete recipe part-d (PLC index 7)?") and \
                "model versions are kept on disk" in said[0], said
            assert page.locator(CARD.format("part-d")).count() == 1, "cancelled: still there"
            page.once("dialog", lambda d: d.accept())
            page.click(f"{CARD.format('part-d')} button[data-delete]")
            page.wait_for_selector(CARD.format("part-d"), state="detached")
            page.wait_for_selector("#toast:has-text('recipe part-d deleted: PLC index 7 is free')")

            page.click(f"{CARD.format('part-a')} button[data-activate]")  # part-b can go once part-a runs
            page.wait_for_selector(f"{CARD.format('part-b')} button[data-delete]")
            page.once("dialog", lambda d: d.accept())
            page.click(f"{CARD.format('part-b')} button[data-delete]")
            page.wait_for_selector(CARD.format("part-b"), state="detached")
            assert not errors, errors
        assert [(r["name"], r["index"], r["active"]) for r in _api(base, "GET", "/api/recipes")] == [
            ("part-a", 0, True)]
        r = _api(base, "POST", "/api/recipes", {"name": "part-e", "plc_index": 7}, role="engineer")
        assert r["index"] == 7  # part-d's index was freed
    finally:
        _stop(p)
