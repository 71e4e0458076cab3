"""Recipes created on the box, then renamed, given another PLC index and deleted over the API (``POST`` and ``DELETE
/api/recipes/{name}``) on a real station (``run --config``) on loopback, as tests/line/test_new_recipe.py creates
them: roles (401 / 403, audited), the body limit (413, a chunked body too), refusals in one line with nothing changed
(409: a recipe of the station file, the active recipe, a rename of a recipe with model versions; 422: the creation's
name and index rules), each audited; the PLC selects a recipe by its new index at once, and a deleted recipe's index
is free (error 6, then a new recipe takes it); after a restart the changes hold, the deleted recipe's versions are
kept in the store's ``.deleted/`` and a recipe created again under its name starts without them or its settings; the
cap on recipes; ``edge-stpm config show`` lists the recipes created on the box."""
from __future__ import annotations

import http.client
import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers.edge_cli import cli
from test_new_recipe import _call, _regs, restart_box, start_box, stop_box

from edge_stpm.runtime.line import plc
from edge_stpm.runtime.station.audit import query
from edge_stpm.runtime.station.config import MAX_RECIPES
from edge_stpm.runtime.station.control import zip_bundle
from edge_stpm.runtime.web.server import RECIPE_BODY


@pytest.fixture(scope="module")
def box(exported: Path, synth_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("pymodbus")
    state = start_box(tmp_path_factory.mktemp("manage"), exported, synth_dir)
    yield state
    stop_box(state)


def _recipes(base: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in _call(base, "GET", "/api/recipes", role="viewer")[1]}


def _names(base: str) -> list[tuple[str, int]]:
    return [(n, r["index"]) for n, r in _recipes(base).items()]


def _audit(box: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return query(box["tmp"] / "h.db", action=action)


def _chunked(base: str, path: str, body: bytes) -> int:
    """POST ``body`` with Transfer-Encoding: chunked (no Content-Length for the guard to refuse first)."""
    host, port = base.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        c.request("POST", path, body=iter([body[i:i + 1024] for i in range(0, len(body), 1024)]),
                  headers={"Authorization": "Bearer engineer-token-01", "Content-Type": "application/json"},
                  encode_chunked=True)
        return c.getresponse().status
    finally:
        c.close()


def test_only_an_engineer_renames_or_deletes_and_the_body_is_capped(box) -> None:
    base = box["base"]
    assert _call(base, "POST", "/api/recipes", {"name": "r1"})[0] == 200
    calls = (("DELETE", "/api/recipes/r1", None, "delete recipe"), ("POST", "/api/recipes/r1", {"name": "r2"},
                                                                     "edit recipe"))
    for method, path, body, action in calls:
        assert _call(base, method, path, body, role=None)[0] == 401
        assert _call(base, method, path, body, role=None, headers={"Authorization": "Bearer wrong-token-0000"}
                     )[0] == 401
        for role in ("viewer", "operator"):
            code, text = _call(base, method, path, body, role=role)
            assert code == 403 and "needs the engineer role" in text, (code, text)
        rows = [(a["who"].split("@")[0], a["outcome"]) for a in _audit(box, action)]
        assert ("viewer", "refused") in rows and ("operator", "refused") in rows, rows
    big = json.dumps({"name": "r2", "pad": "x" * RECIPE_BODY}).encode()
    assert _call(base, "POST", "/api/recipes/r1", raw=big)[0] == 413
    assert _call(base, "DELETE", "/api/recipes/r1", raw=big)[0] == 413
    assert _chunked(base, "/api/recipes/r1", big) == 413  # declared no length: cut when read
    assert _names(base) == [("a", 0), ("r1", 1)], "nothing renamed or deleted"


@pytest.mark.parametrize("body, says", [
    ({"name": "a"}, "name a: recipe a already exists (PLC index 0)"),
    ({"plc_index": 0}, "plc_index 0 is taken by recipe a"),
    ({"plc_index": 65536}, "plc_index 65536 is out of range: 0–65535"),
    ({"plc_index": "3"}, "plc_index: a whole number 0–65535"),
    ({"name": "bad name!"}, "name bad name!: use 1–64 letters, digits"),
    ({"name": "recipes.json"}, "reserved"),
    ({"name": "r2", "index": 3}, "unknown key 'index': a recipe's change takes name, plc_index"),
    ({}, "recipe r1: nothing to change"),
    ({"name": "r1", "plc_index": 1}, "recipe r1: nothing to change"),
])
def test_bad_changes_are_422_in_one_line_and_change_nothing(box, body: dict[str, Any], says: str) -> None:
    code, text = _call(box["base"], "POST", "/api/recipes/r1", body)
    assert code == 422 and says in text and "\n" not in text.strip(), (code, text)
    assert _names(box["base"]) == [("a", 0), ("r1", 1)]
    last = _audit(box, "edit recipe")[-1]
    assert (last["recipe"], last["outcome"], last["who"].split("@")[0]) == ("r1", "refused", "engineer")
    assert says in last["detail"]


def test_the_station_file_s_and_the_active_recipe_are_409(box) -> None:
    """Only recipes created on the box are renamed or deleted here (the station file's are the file's); the active
    recipe is neither (select another first); an unknown one is 422. Each refusal is one line and an audit row."""
    base = box["base"]
    for method, path, body, says in (
        ("DELETE", "/api/recipes/a", None, "recipe a comes from the station file: only recipes created on the box "
                                           "are deleted here; edit the station file"),
        ("POST", "/api/recipes/a", {"name": "a2"}, "recipe a comes from the station file"),
        ("DELETE", "/api/recipes/nope", None, "no recipe named 'nope' on this station (a, r1)"),
    ):
        code, text = _call(base, method, path, body)
        assert code == (422 if "nope" in path else 409) and says in text and "\n" not in text.strip(), (code, text)
    assert _call(base, "POST", "/api/recipe/active?name=r1")[0] == 200  # what "make active" on the page calls
    for method, body, doing in (("DELETE", None, "deleting"), ("POST", {"plc_index": 4}, "changing")):
        code, text = _call(base, method, "/api/recipes/r1", body)
        assert code == 409 and text == (f"recipe r1 is the active recipe: select another first (PLC register 11, or "
                                        f"make active on the Recipes page), then try {doing} it again"), (code, text)
    assert _call(base, "POST", "/api/recipe/active?name=a")[0] == 200
    assert _names(base) == [("a", 0), ("r1", 1)]
    refused = [(a["action"], a["recipe"]) for a in query(box["tmp"] / "h.db") if a["outcome"] == "refused"
               and a["who"].startswith("engineer@") and a["action"] in ("delete recipe", "edit recipe")]
    assert {("delete recipe", "a"), ("edit recipe", "a"), ("delete recipe", "nope"), ("delete recipe", "r1"),
            ("edit recipe", "r1")} <= set(refused), refused


def test_changes_hold_after_a_restart_and_a_deleted_recipe_frees_its_index(box) -> None:
    base, modbus, store = box["base"], box["modbus"], box["tmp"] / "models"
    assert _call(base, "POST", "/api/recipes", {"name": "r3", "plc_index": 5})[0] == 200
    code, r = _call(base, "POST", "/api/recipes/r3", {"name": "r3b", "plc_index": 7})
    assert code == 200 and (r["recipe"], r["index"], r["before"]) == ("r3b", 7, {"name": "r3", "index": 5}), r
    regs = _regs(modbus, write=7)  # the PLC selects it by its new index at once (no model yet: error 7) …
    assert regs[plc.ERROR_CODE] == plc.ERR_NO_MODEL, regs
    assert _regs(modbus, write=5)[plc.ERROR_CODE] == plc.ERR_RECIPE  # … and no longer by the old one
    assert _regs(modbus, write=0)[plc.ERROR_CODE] == plc.ERR_NONE

    code, r = _call(base, "POST", "/api/deploy?recipe=r1", raw=zip_bundle(box["bundle"]),
                    headers={"Content-Type": "application/zip"})
    assert code == 200 and r["after"]["version"] == 1, r
    code, text = _call(base, "POST", "/api/recipes/r1", {"name": "r1x"})
    assert code == 409 and "recipe r1 has model versions in the store (v1)" in text, (code, text)
    code, r = _call(base, "POST", "/api/recipes/r1", {"plc_index": 2})  # its PLC index may change
    assert code == 200 and r["index"] == 2, r
    code, text = _call(base, "POST", "/api/recipe-settings", {"recipe": "r1", "min_defect_area": 9})
    assert code == 200, text
    code, r = _call(base, "DELETE", "/api/recipes/r1")
    assert code == 200 and r["deleted"] == "r1" and "PLC index 2 is free" in r["detail"], r
    assert "its 1 model version kept on disk in" in r["detail"] and "/.deleted/r1-" in r["detail"], r
    assert _regs(modbus, write=2)[plc.ERROR_CODE] == plc.ERR_RECIPE  # the deleted recipe's index: unknown now
    assert _regs(modbus, write=0)[plc.ERROR_CODE] == plc.ERR_NONE
    assert _call(base, "POST", "/api/recipes", {"name": "r4", "plc_index": 2})[0] == 200  # and free
    assert _call(base, "POST", "/api/recipes", {"name": "r1", "plc_index": 3})[0] == 200  # the name too

    restart_box(box)
    got = _recipes(base)
    assert [(n, g["index"], g["created"]) for n, g in got.items()] == [
        ("a", 0, False), ("r3b", 7, True), ("r4", 2, True), ("r1", 3, True)]
    assert (got["r1"]["has_model"], got["r1"]["version"], got["r1"]["versions"]) == (False, None, [])
    assert got["r1"]["min_defect_area"] == 0  # the deleted r1's settings were forgotten with it
    kept = list((store / ".deleted").glob("r1-*/v1/model_fp32.onnx"))
    assert len(kept) == 1 and not (store / "r3").exists(), kept
    assert [e["name"] for e in json.loads((store / "recipes.json").read_text())["recipes"]] == ["r3b", "r4", "r1"]
    assert _regs(modbus, write=7)[plc.ERROR_CODE] == plc.ERR_NO_MODEL
    assert _regs(modbus, write=5)[plc.ERROR_CODE] == plc.ERR_RECIPE
    assert _regs(modbus, write=0)[plc.ERROR_CODE] == plc.ERR_NONE
    ok = [(a["action"], a["recipe"], a["who"].split("@")[0], a["before"], a["after"]) for a in query(box["tmp"] / "h.db")
          if a["action"] in ("delete recipe", "edit recipe") and a["outcome"] == "ok"]
    assert ok == [("edit recipe", "r3", "engineer", {"name": "r3", "index": 5}, {"name": "r3b", "index": 7}),
                  ("edit recipe", "r1", "engineer", {"name": "r1", "index": 1}, {"name": "r1", "index": 2}),
                  ("delete recipe", "r1", "engineer", {"index": 2, "version": 1, "created_by": ok[-1][3]["created_by"]},
                   None)], ok
    assert ok[-1][3]["created_by"].startswith("engineer@")


def test_config_show_lists_the_recipes_created_on_the_box(box, tmp_path: Path) -> None:
    """``edge-stpm config show`` (a real process): the file's recipes, then those created on the box, each marked;
    one the file now overrules is a comment saying why; a damaged recipes.json is a comment, not a failure."""
    r = cli("config", "show", box["st"])
    assert r.returncode == 0, r.stderr
    doc = tomllib.loads(r.stdout)
    assert [(x["name"], x["index"]) for x in doc["recipes"]] == _names(box["base"])
    assert "[[recipes]]  # created on the box by engineer@127.0.0.1 at " in r.stdout
    assert r.stdout.count("# created on the box by") == 3, r.stdout
    wins = tmp_path / "st.toml"  # the station file now has a recipe r4 itself: the file's runs
    wins.write_text(box["st"].read_text() + '[[recipes]]\nname = "r4"\nindex = 40\n')
    r = cli("config", "show", wins)
    assert r.returncode == 0 and ("# recipe r4 (created on the box): not loaded: the station file has a recipe of "
                                  "that name now (the file's runs)") in r.stdout, r.stdout
    assert [(x["name"], x["index"]) for x in tomllib.loads(r.stdout)["recipes"]] == [
        ("a", 0), ("r4", 40), ("r3b", 7), ("r1", 3)]
    store = tmp_path / "models"
    store.mkdir()
    (store / "recipes.json").write_text("{not json")
    other = tmp_path / "other.toml"
    other.write_text(f'version = 2\n[[recipes]]\nname = "a"\nindex = 0\n[store]\nroot = "{store}"\n')
    r = cli("config", "show", other)
    assert r.returncode == 0 and "# recipes created on the box: " in r.stdout and "damaged (not JSON)" in r.stdout
    assert len(tomllib.loads(r.stdout)["recipes"]) == 1


def test_the_number_of_recipes_is_capped(box) -> None:
    """At most MAX_RECIPES (256: the station file's and those created on the box together) — far fewer than the
    PLC's 65,536 indexes; one more is 422 in one line; deleting one makes room again."""
    base = box["base"]
    have = len(_names(base))
    made = [f"cap-{i}" for i in range(MAX_RECIPES - have)]
    for name in made:
        assert _call(base, "POST", "/api/recipes", {"name": name})[0] == 200, name
    code, text = _call(base, "POST", "/api/recipes", {"name": "one-more"})
    assert code == 422 and "\n" not in text.strip(), (code, text)
    assert text.startswith(f"this station has {MAX_RECIPES} recipes, the most it keeps ({MAX_RECIPES}, the station "
                           "file's and those created on the box together): delete a created recipe first"), text
    assert _call(base, "DELETE", f"/api/recipes/{made[-1]}")[0] == 200
    assert _call(base, "POST", "/api/recipes", {"name": "one-more"})[0] == 200
    for name in [*made[:-1], "one-more"]:
        assert _call(base, "DELETE", f"/api/recipes/{name}")[0] == 200, name
    assert len(_names(base)) == have
    assert _call(base, "GET", "/healthz", role=None)[0] == 200


def test_a_new_recipe_does_not_take_a_left_over_model(box) -> None:
    """The model store still keeps versions under a name no recipe has (a recipe taken out of the station file): a
    new recipe of that name would start with no model and take them at the next start, so it is refused (409, one
    line, audited); the left-over folder is untouched."""
    base, store = box["base"], box["tmp"] / "models"
    left = store / "gone"
    left.mkdir(parents=True)
    (left / "versions.json").write_text(json.dumps({"recipe": "gone", "current": 1, "versions": [
        {"version": 1, "path": str(left / "v1"), "status": "live"}], "history": []}))
    try:
        code, text = _call(base, "POST", "/api/recipes", {"name": "gone"})
        assert code == 409 and text == (f"name gone: the model store still keeps versions under that name ({left}); "
                                        "choose another"), (code, text)
        assert "gone" not in _recipes(base) and (left / "versions.json").is_file()
        assert any(a["recipe"] == "gone" and a["outcome"] == "refused" for a in _audit(box, "create recipe"))
    finally:
        shutil.rmtree(left)
