"""Recipes created on the box (the web app's Recipes page, ``POST /api/recipes``): checked by the same rules as the
station file's (``config.Recipe``: the name's pattern, the PLC index 0–65535, unique names and indexes), stored in
the model store's ``recipes.json`` (``store.ModelStore.created``) and merged with the station file's recipes at each
start. The station file stays the user's file and wins: a created recipe whose name or index the file now uses is
left out, in one line. A created recipe starts with no model yet (collect, fit, deploy: its versions are kept in the
store under its name like any recipe's). A created recipe can later be renamed or given another PLC index
(``changed``, the same rules) and deleted (``control.StationControl``); the station file's recipes are the file's.
At most ``MAX_RECIPES`` recipes in all (a PLC index is 16 bits: that bound is far above)."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from pydantic import ValidationError

from edge_stpm.common.errors import UserError
from edge_stpm.runtime.station.config import MAX_RECIPES, NAME, RECIPE_INDEX_MAX, Recipe, effective_toml, recipe_toml
from edge_stpm.runtime.station.store import ModelStore

KEYS = ("name", "plc_index", "copy_from")  # what a request may give
EDIT_KEYS = ("name", "plc_index")  # what a change of a created recipe may give
COPIED = ("threshold", "precision", "roi", "ignore_mask", "ignore_polygons", "min_defect_area", "review_band")
RESERVED = ("settings.json", "recipes.json", "versions.json")  # the store's own files (a recipe is a folder there)
NAME_RULE = "1–64 letters, digits, '_', '-' or '.', starting with a letter or digit"


def next_index(used: Iterable[int]) -> int:
    """The next free PLC index: one above the highest in use (0 on an empty station), else the lowest free one."""
    taken = set(used)
    top = max(taken, default=-1) + 1
    if top <= RECIPE_INDEX_MAX:
        return top
    return next(i for i in range(RECIPE_INDEX_MAX + 1) if i not in taken)


def _index(value: Any, taken: dict[int, str]) -> int:
    if value is None:
        if len(taken) > RECIPE_INDEX_MAX:
            raise UserError("plc_index: every index 0–65535 is taken")
        return next_index(taken)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"plc_index: a whole number 0–{RECIPE_INDEX_MAX}, or leave it out for the next free one")
    if not 0 <= value <= RECIPE_INDEX_MAX:
        raise UserError(f"plc_index {value} is out of range: 0–{RECIPE_INDEX_MAX} (Modbus register 11 holds 16 bits)")
    if value in taken:
        raise UserError(f"plc_index {value} is taken by recipe {taken[value]}")
    return value


def _name(value: Any, names: dict[str, int]) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"name: give the new recipe's name ({NAME_RULE})")
    shown = value if len(value) <= 70 and value.isprintable() else repr(value[:70])
    if not NAME.match(value):
        raise UserError(f"name {shown}: use {NAME_RULE}")
    if value in names:
        raise UserError(f"name {value}: recipe {value} already exists (PLC index {names[value]})")
    if value.lower() in RESERVED:
        raise UserError(f"name {value}: reserved (a file of the model store); choose another")
    return value


def new_recipe(body: dict[str, Any], recipes: Any) -> tuple[Recipe, str | None]:
    """The recipe a request asks for (``body``: name, plc_index?, copy_from?) on the station whose recipe set is
    ``recipes``, with no model; the settings of ``copy_from`` (threshold, precision, ROI, ignore mask and polygons,
    minimum area, review band) as they run now. One UserError line per refusal."""
    unknown = sorted(set(body) - set(KEYS))
    if unknown:
        raise UserError(f"unknown key {unknown[0][:40]!r}: a new recipe takes {', '.join(KEYS)}")
    loaded = list(recipes.recipes.values())
    if len(loaded) >= MAX_RECIPES:
        raise UserError(f"this station has {len(loaded)} recipes, the most it keeps ({MAX_RECIPES}, the station "
                        "file's and those created on the box together): delete a created recipe first")
    name = _name(body.get("name"), {r.cfg.name: r.cfg.index for r in loaded})
    index = _index(body.get("plc_index"), {r.cfg.index: r.cfg.name for r in loaded})
    values: dict[str, Any] = {"name": name, "index": index, "model": None}
    multiple = False
    src = body.get("copy_from")
    if src is not None:
        rec = recipes.by_name(src) if isinstance(src, str) else None
        if rec is None:
            raise UserError(f"copy_from {str(src)[:70]!r}: no recipe of that name on this station")
        values |= {k: getattr(rec.cfg, k) for k in COPIED}
        multiple = rec.cfg.threshold_multiple
    cfg = Recipe.model_validate(values)
    cfg._threshold_multiple = multiple
    return cfg, src


def changed(body: dict[str, Any], cfg: Recipe, recipes: Any) -> Recipe:
    """``cfg`` (a created recipe) under the new name and/or PLC index ``body`` asks for (``name``, ``plc_index``:
    either left out keeps it), checked by the rules a new recipe's are — the other recipes' names and indexes taken.
    One UserError line per refusal, also when nothing would change."""
    unknown = sorted(set(body) - set(EDIT_KEYS))
    if unknown:
        raise UserError(f"unknown key {unknown[0][:40]!r}: a recipe's change takes {', '.join(EDIT_KEYS)}")
    others = [r.cfg for r in recipes.recipes.values() if r.cfg.index != cfg.index]
    name, index = body.get("name"), body.get("plc_index")
    if name is None:
        name = cfg.name
    elif name != cfg.name:
        name = _name(name, {r.name: r.index for r in others})
    if index is None or (type(index) is int and index == cfg.index):
        index = cfg.index
    else:
        index = _index(index, {r.index: r.name for r in others})
    if (name, index) == (cfg.name, cfg.index):
        raise UserError(f"recipe {cfg.name}: nothing to change (give a new name or plc_index)")
    return cfg.model_copy(update={"name": name, "index": index})


def entry(cfg: Recipe, who: str, when: float, copied_from: str | None) -> dict[str, Any]:
    """What ``recipes.json`` keeps of a created recipe (never a model: its versions are the store's)."""
    doc = cfg.model_dump(mode="json", exclude={"model"})
    return doc | {"threshold_multiple": cfg.threshold_multiple, "created_by": who, "created_at": when,
                  "copied_from": copied_from}


def merge(file_recipes: list[Recipe], entries: list[dict[str, Any]], log: Callable[[str], None] | None = None
          ) -> list[Recipe]:
    """The station file's recipes, then the created ones the file leaves room for (the file wins a name or an index;
    a created recipe that no longer checks — a copied ignore mask since removed — is left out), each said in one
    line."""
    out = list(file_recipes)
    names, indexes = {r.name for r in out}, {r.index for r in out}
    for e in entries:
        name, why = str(e.get("name", "?")) if isinstance(e, dict) else "?", ""
        try:
            cfg = Recipe.model_validate({k: e.get(k) for k in ("name", "index", *COPIED) if e.get(k) is not None})
            cfg._threshold_multiple = bool(e.get("threshold_multiple", False))
        except (ValidationError, AttributeError) as exc:
            cfg, why = None, f"does not check ({str(exc).splitlines()[0]})"
        if cfg is not None and cfg.name in names:
            why = "the station file has a recipe of that name now (the file's runs)"
        elif cfg is not None and cfg.index in indexes:
            why = f"the station file gives its PLC index {cfg.index} to another recipe now (the file's runs)"
        elif cfg is not None and cfg.ignore_mask is not None and not cfg.ignore_mask.is_file():
            why = f"its ignore mask {cfg.ignore_mask} is gone"
        elif cfg is not None and len(out) >= MAX_RECIPES:
            why = f"the station has {MAX_RECIPES} recipes already"
        if why or cfg is None:
            if log is not None:
                log(f"recipe {name} (created on the box): not loaded: {why}")
            continue
        out.append(cfg)
        names.add(cfg.name)
        indexes.add(cfg.index)
        if log is not None:
            log(f"recipe {cfg.index} {cfg.name}: created on the box by {e.get('created_by', '?')} (kept in the model "
                "store's recipes.json)")
    return out


def show_toml(st: Any, run_defaults: dict[str, Any]) -> str:
    """``edge-stpm config show``: the station file's effective configuration (``config.effective_toml``) with, after
    its recipes, those created on the box that a start adds (the model store's recipes.json; each marked on its
    ``[[recipes]]`` line) and, as comments, those it would leave out."""
    return effective_toml(st, run_defaults, _created_toml(st))


def _created_toml(st: Any) -> list[str]:
    path = st.store.folder() / ModelStore.CREATED
    try:
        entries = ModelStore(st.store.folder()).created()
    except UserError as exc:
        return [f"# recipes created on the box: {exc}; a start runs the station file's recipes only", ""]
    if not entries:
        return [f"# no recipes created on the box ({path})", ""]
    said: list[str] = []
    lines = [f"# recipes created on the box ({path}): not in the station file; a start adds them after its recipes",
             ""]
    for r in merge(list(st.recipes), entries, said.append)[len(st.recipes):]:
        e = next(e for e in entries if (e.get("name"), e.get("index")) == (r.name, r.index))
        t = e.get("created_at")
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t)) if isinstance(t, (int, float)) else "?"
        scale = (" its threshold multiplies the stored thresholds (as in a version-1 file);"
                 if r.threshold_multiple and st.version != 1 else "")
        lines += recipe_toml(r, f"created on the box by {e.get('created_by', '?')} at {when};{scale} its models: "
                                f"the model store's {st.store.folder() / r.name}/")
    left_out = [f"# {line}" for line in said if ": not loaded:" in line]
    return lines + left_out + ([""] if left_out else [])
