"""What changes a running station: deploy a bundle to a recipe (verify, self-test, load beside the running model,
swap between two frames), roll back to the model that ran before the same way, select a recipe — each written to the
audit log with who, before and after, refused in one line with the running model kept when it cannot be done."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_stpm.common.errors import Conflict, UserError
from edge_stpm.common.files import zip_tree
from edge_stpm.common.safezip import ZipLimits, extract_flat
from edge_stpm.runtime.inspector import Inspector, NoModel
from edge_stpm.runtime.station.audit import Audit
from edge_stpm.runtime.station.created import changed, entry, new_recipe
from edge_stpm.runtime.station.recipes import LoadedRecipe, RecipeSet
from edge_stpm.runtime.station.store import ModelStore, refuse_links, self_test, verify

MAX_UPLOAD_BYTES = 2 * 2**30  # the zip itself (bytes); what it unpacks to is capped by ZipLimits


@dataclass
class StationControl:
    recipes: RecipeSet
    store: ModelStore
    audit: Audit
    backend: str = "auto"
    threads: int | None = None
    frame_path: str = "auto"
    engineer_token: str | None = None
    station: Any = None  # the station file as the run started (or was last reloaded): what a reload is compared with
    zip_limits: ZipLimits = field(default_factory=ZipLimits)  # what an uploaded or dropped zip may unpack to
    # one change of the recipe set (create, rename, delete) or of a recipe's model (deploy, rollback) at a time
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def adopt(self, log: Any = None) -> None:
        """Every recipe's station-file model is version 0 in the store (its history starts there); a recipe whose
        store says another version was live when the box stopped (a deploy or a rollback) gets that version back,
        loaded and self-tested — if it no longer loads, the station file's model runs and the line says why. A recipe
        with no model in the station file gets the version its store says was live (its first model, learned on the
        box), else it stays without one."""
        for r in list(self.recipes.recipes.values()):
            if r.cfg.model is not None:
                self.store.adopt(r.cfg.name, Path(r.cfg.model))
            doc = self.store.versions(r.cfg.name)
            r.version = doc["current"]
            entry = next((v for v in doc["versions"] if v["version"] == doc["current"]), None)
            if entry is None or entry["version"] == 0 or entry["sha256"] == r.sha256:
                continue
            try:
                new, _ = self._load(r, entry)
            except (UserError, OSError) as exc:
                r.version = 0 if r.has_model else None
                if log is not None:
                    log(f"recipe {r.cfg.name}: v{entry['version']} was live but does not load ({exc}); "
                        + ("the station file's model (v0) runs" if r.has_model else "it has no model"))
                continue
            self._swap(new)  # the station file's model is closed by the swap
            if log is not None:
                log(f"recipe {r.cfg.name}: v{entry['version']} restored (live when the station stopped)")

    def restore_settings(self, log: Any = None) -> None:
        """At start: each recipe's settings last changed from the web app (the store's settings.json: threshold,
        minimum defect area, review band) over the station file's values, each said in one line."""
        for name, v in self.store.settings().items():
            rec = self.recipes.by_name(name)
            if rec is None or not isinstance(v, dict):
                continue
            try:
                cfg = type(rec.cfg).model_validate(rec.cfg.model_dump() | {k: v.get(k) for k in SETTING_KEYS})
                cfg._threshold_multiple = bool(v.get("threshold_multiple", rec.cfg.threshold_multiple))
                self._apply(rec, cfg)
            except (UserError, ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
                if log is not None:
                    log(f"recipe {name}: the settings changed from the web app are not applied "
                        f"({str(exc).splitlines()[0]}); the station file's run")
                continue
            if log is not None:
                log(f"recipe {name}: threshold {cfg.threshold:g}, minimum area {cfg.min_defect_area}, review band "
                    f"{cfg.review_band}, set from the web app by {v.get('by', '?')} (kept in "
                    f"{self.store.root / self.store.SETTINGS}; a reload that changes this recipe replaces them)")

    def create_recipe(self, body: dict[str, Any], who: str) -> dict[str, Any]:
        """A new recipe from the web app or the API (``body``: name, plc_index?, copy_from?; runtime/station/created.py
        checks it as the station file's are checked): stored in the model store's recipes.json first (where the next
        start finds it), then selectable by the PLC at once, with no model yet (error 7 while active). Audited; a
        refusal is one UserError line, audited too."""
        with self._lock:
            try:
                cfg, src = new_recipe(body, self.recipes)
                self._name_free(cfg.name)
                self.store.add_created(entry(cfg, who, time.time(), src))
            except UserError as exc:
                name = body.get("name") if isinstance(body.get("name"), str) else None
                self.audit.write(who, "create recipe", (name or "")[:64] or None, None, None, "refused", str(exc))
                raise
            self.recipes.add(LoadedRecipe(cfg, NoModel(), "", 0.0))
        after = {"index": cfg.index, "copied_from": src, "threshold": cfg.threshold, "roi": cfg.roi,
                 "min_defect_area": cfg.min_defect_area, "review_band": cfg.review_band}
        self.audit.write(who, "create recipe", cfg.name, None, after, "ok",
                         f"PLC index {cfg.index}" + (f", settings of {src}" if src else "") + "; no model yet")
        return {"recipe": cfg.name, "index": cfg.index, "copied_from": src, "has_model": False,
                "recipes": self.recipes.summary()}

    def delete_recipe(self, name: str, who: str) -> dict[str, Any]:
        """A recipe created on the box taken out (``DELETE /api/recipes/{name}``). Refused (Conflict) for a recipe of
        the station file and for the active one. recipes.json is written first (without it: the next start does not
        bring it back), then its PLC index is free at once; its model versions are kept on disk, moved whole to the
        store's ``.deleted/`` (a recipe created later under the same name starts with none); its settings changed
        from the web app are forgotten. Audited, refusals too."""
        with self._lock:
            rec = self._recipe(name, who, "delete recipe")
            before = {"index": rec.cfg.index, "version": rec.version}
            try:
                made = self._created_entry(rec, "deleted")
                self._withdraw(rec, "deleting it")
                self._write_created(rec, name, None)
            except UserError as exc:
                self.audit.write(who, "delete recipe", name, before, None, "refused", str(exc))
                raise
            kept = self._archive(name)
            self._forget_settings(name)
            self.recipes.remove(rec.cfg.index)
        detail = f"PLC index {rec.cfg.index} is free; {kept}"
        self.audit.write(who, "delete recipe", name, before | {"created_by": made.get("created_by")}, None, "ok",
                         detail)
        return {"deleted": name, "index": rec.cfg.index, "detail": detail, "recipes": self.recipes.summary()}

    def _write_created(self, rec: Any, name: str, entry: dict[str, Any] | None) -> None:
        """recipes.json with ``name``'s entry replaced (None: removed); on failure the withdrawn recipe ``rec`` is
        given back to the PLC and the one-line error goes on."""
        try:
            self.store.update_created(name, rec.cfg.index, entry)
        except UserError:
            self.recipes.restore(rec.cfg.index)
            raise

    def edit_recipe(self, name: str, body: dict[str, Any], who: str) -> dict[str, Any]:
        """A recipe created on the box renamed and/or given another PLC index (``POST /api/recipes/{name}``, body
        ``{name?, plc_index?}``, checked as a new recipe's are: created.changed). Refused (Conflict) for a recipe of
        the station file, for the active one, and — a rename — for a recipe with model versions (they, its history
        and its record rows are kept by name) or a name the store still keeps versions under. recipes.json is written
        first, then the PLC selects it by its new index at once (no longer by the old one). Audited, refusals too."""
        with self._lock:
            rec = self._recipe(name, who, "edit recipe")
            before = {"name": name, "index": rec.cfg.index}
            try:
                made = self._created_entry(rec, "renamed or given another PLC index")
                cfg = changed(body, rec.cfg, self.recipes)
                if cfg.name != name:
                    self._may_rename(name, cfg.name)
                self._withdraw(rec, "changing it")
                self._write_created(rec, name, made | {"name": cfg.name, "index": cfg.index, "changed_by": who,
                                                       "changed_at": time.time()})
            except UserError as exc:
                self.audit.write(who, "edit recipe", name, before, None, "refused", str(exc))
                raise
            self.recipes.rekey(rec.cfg.index, LoadedRecipe(cfg, rec.inspector, rec.sha256, rec.load_s,
                                                           version=rec.version))
        after = {"name": cfg.name, "index": cfg.index}
        self.audit.write(who, "edit recipe", name, before, after, "ok",
                         f"now {cfg.name}, PLC index {cfg.index}" + (f" (index {rec.cfg.index} is free)"
                                                                     if cfg.index != rec.cfg.index else ""))
        return {"recipe": cfg.name, "index": cfg.index, "before": before, "recipes": self.recipes.summary()}

    def created(self) -> dict[str, dict[str, Any]]:
        """The recipes running now that were created on the box (the station file's are not), by name, each with
        its recipes.json entry; {} when recipes.json cannot be read."""
        try:
            return self._created(self.store.created())
        except UserError:
            return {}

    def _created(self, entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        file = {r.name for r in self.station.recipes} if self.station is not None else set()
        loaded = {(r.cfg.name, r.cfg.index) for r in self.recipes.recipes.values()}
        return {e["name"]: e for e in entries if (e.get("name"), e.get("index")) in loaded and e["name"] not in file}

    def _created_entry(self, rec: LoadedRecipe, what: str) -> dict[str, Any]:
        """``rec``'s recipes.json entry; Conflict when it is a recipe of the station file; a damaged recipes.json is
        its own UserError line."""
        got = self._created(self.store.created()).get(rec.cfg.name)
        if got is None:
            raise Conflict(f"recipe {rec.cfg.name} comes from the station file: only recipes created on the box are "
                           f"{what} here; edit the station file for it (then restart)")
        return got

    def _withdraw(self, rec: LoadedRecipe, doing: str) -> None:
        """``rec`` no longer selectable while it changes; Conflict when it is the active recipe."""
        if not self.recipes.withdraw(rec.cfg.index):
            raise Conflict(f"recipe {rec.cfg.name} is the active recipe: select another first (PLC register 11, or "
                           f"make active on the Recipes page), then try {doing} again")

    def _may_rename(self, name: str, new: str) -> None:
        """Conflict when a rename would part a recipe from its model versions, or give it another's."""
        have = [v["version"] for v in self.store.versions(name)["versions"]]
        if have:
            raise Conflict(f"recipe {name} has model versions in the store (v{', v'.join(map(str, have))}), kept by "
                           "its name: it cannot be renamed; change only its PLC index, or create a new recipe "
                           f"(copy settings from {name}) and deploy to it")
        self._name_free(new)

    def _name_free(self, name: str) -> None:
        """Conflict when the model store still keeps versions under ``name`` (a recipe taken out of the station file):
        a new or renamed recipe of that name would start with no model, then take them at the next start."""
        if self.store.versions(name)["versions"]:
            raise Conflict(f"name {name}: the model store still keeps versions under that name "
                           f"({self.store.root / name}); choose another")

    def _archive(self, name: str) -> str:
        """A deleted recipe's store folder moved to ``.deleted/``; what became of it, in words."""
        try:
            n = sum(v.get("status") != "refused" for v in self.store.versions(name)["versions"])  # (refused: no files)
            dst = self.store.archive(name)
        except (OSError, UserError) as exc:
            return f"its model store folder {self.store.root / name} stays where it is (not moved: {exc})"
        if dst is None:
            return "it had no model versions"
        return (f"its {n} model version{'s' if n != 1 else ''} kept on disk in {dst} (remove that folder to free "
                "the disk)")

    def _forget_settings(self, name: str) -> None:
        """A deleted recipe's settings changed from the web app forgotten (a recipe created later under its name
        starts with its own)."""
        if name in self.store.settings():
            with contextlib.suppress(UserError, OSError):
                self.store.save_settings(name, None)

    def _apply(self, rec: LoadedRecipe, cfg: Any) -> None:
        """``rec`` with other live settings, on the same loaded model, swapped in between two frames."""
        self.recipes.replace(LoadedRecipe(cfg.model_copy(update={"model": rec.cfg.model}),
                                          self._same_model(rec, cfg), rec.sha256, 0.0, version=rec.version),
                             close_old=False)

    def _same_model(self, rec: LoadedRecipe, cfg: Any) -> Any:
        """An inspector on ``rec``'s loaded model with ``cfg``'s threshold (a recipe with no model yet: none)."""
        if isinstance(rec.inspector, NoModel):
            return rec.inspector
        return Inspector(rec.inspector.backend, cfg.threshold, self.frame_path, cfg.threshold_multiple)

    def _recipe(self, name: str, who: str, action: str) -> LoadedRecipe:
        rec = self.recipes.by_name(name)
        if rec is None:
            err = UserError(f"no recipe named {name!r} on this station "
                            f"({', '.join(r.cfg.name for r in self.recipes.recipes.values())})")
            self.audit.write(who, action, name, None, None, "refused", str(err))
            raise err
        return rec

    def _load(self, rec: LoadedRecipe, entry: dict[str, Any]) -> tuple[LoadedRecipe, dict[str, Any]]:
        """The store's version ``entry`` of ``rec`` opened and self-tested (closed again if it fails)."""
        t0 = time.perf_counter()
        insp = Inspector.load(Path(entry["path"]), self.backend, rec.cfg.threshold, rec.cfg.precision,
                              threads=self.threads, frame_path=self.frame_path,
                              threshold_multiple=rec.cfg.threshold_multiple)
        try:
            test = self_test(insp, Path(entry["path"]))
        except BaseException:
            insp.close()
            raise
        new = LoadedRecipe(rec.cfg.model_copy(update={"model": entry["path"]}), insp, entry["sha256"],
                           time.perf_counter() - t0, version=entry["version"])
        return new, test

    def deploy(self, recipe: str, bundle: Path, who: str, source: str) -> dict[str, Any]:
        """A bundle folder to ``recipe``: verified (plain files only, manifest, schemas, TensorRT's rules, same
        backbone and size as the running model), copied into the store, loaded beside the running model,
        self-tested, then swapped in between two frames. Any failure: one UserError (a full disk too), the running
        model stays, the attempt is audited. Never at once with a rename or a delete (the recipe stays put)."""
        with self._lock:
            return self._deploy(recipe, bundle, who, source)

    def _deploy(self, recipe: str, bundle: Path, who: str, source: str) -> dict[str, Any]:
        rec = self._recipe(recipe, who, "deploy")
        before = {"version": rec.version, "sha256": rec.sha256}
        entry: dict[str, Any] | None = None
        new: LoadedRecipe | None = None
        try:
            try:
                refuse_links(bundle)
                md = verify(bundle, like=rec.inspector if rec.has_model else None)  # a first model: any
                entry = self.store.add(recipe, bundle, who, source, md)
                new, test = self._load(rec, entry)
                self.store.set_current(recipe, entry["version"])
            except OSError as exc:
                raise UserError(f"deploy to recipe {recipe} failed: {exc.strerror or exc} ({exc.filename or bundle}); "
                                "the running model stays") from None
        except Exception as exc:
            self._refused(recipe, who, before, entry, new, exc)
            raise
        swap_ms = self._swap(new)
        after = {"version": entry["version"], "sha256": entry["sha256"]}
        self.audit.write(who, "deploy", recipe, before, after, "ok",
                         f"from {source}; self-test {test['precision']} max error "
                         f"{test['max_error_threshold_units']:.2g} × threshold; load {new.load_s:.2f} s")
        return {"recipe": recipe, "before": before, "after": after, "self_test": test, "load_s": new.load_s,
                "swap_ms": swap_ms}

    def _refused(self, recipe: str, who: str, before: dict[str, Any], entry: dict[str, Any] | None,
                 new: LoadedRecipe | None, exc: BaseException) -> None:
        """A deploy that failed: the model it loaded closed, its store version marked refused, the attempt audited."""
        why = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        if new is not None:
            new.inspector.close()
        if entry is not None:
            with contextlib.suppress(UserError, OSError):
                self.store.refuse(recipe, entry["version"], why)
        self.audit.write(who, "deploy", recipe, before, None, "refused", why)

    def _swap(self, new: LoadedRecipe) -> float:
        """``new`` takes over between two frames; returns the swap's time (ms)."""
        t0 = time.perf_counter()
        self.recipes.replace(new)
        return (time.perf_counter() - t0) * 1e3

    def rollback(self, recipe: str, who: str) -> dict[str, Any]:
        """Back to the model that ran before the current one (the recipe's history in the store, not the next lower
        version number), loaded and self-tested the same way; audited with both versions."""
        with self._lock:
            return self._rollback(recipe, who)

    def _rollback(self, recipe: str, who: str) -> dict[str, Any]:
        rec = self._recipe(recipe, who, "rollback")
        before = {"version": rec.version, "sha256": rec.sha256}
        new = None
        try:
            prev = self.store.previous(recipe)
            if prev is None:
                raise UserError(f"recipe {recipe} has no earlier model to roll back to: v{rec.version} is the first "
                                "that ran (after the rollbacks so far)")
            try:
                new, test = self._load(rec, prev)
                self.store.set_current(recipe, prev["version"], rollback=True)
            except OSError as exc:
                raise UserError(f"rollback of recipe {recipe} failed: {exc.strerror or exc}; the running model "
                                "stays") from None
        except UserError as exc:
            if new is not None:
                new.inspector.close()
            self.audit.write(who, "rollback", recipe, before, None, "refused", str(exc))
            raise
        self._swap(new)
        after = {"version": prev["version"], "sha256": prev["sha256"]}
        self.audit.write(who, "rollback", recipe, before, after, "ok",
                         f"back to v{prev['version']}, the model that ran before v{rec.version}; "
                         f"load {new.load_s:.2f} s")
        return {"recipe": recipe, "before": before, "after": after, "self_test": test}

    def reload(self, new: Any, who: str = "SIGHUP") -> list[str]:
        """A re-read station file applied between two frames where it changes only what can change live — recipes'
        thresholds, ROI, ignore mask and minimum area; anything else (sources, outputs, servers, recipes added,
        removed or given other models) is refused in one UserError and the running configuration stays. Returns the
        recipes changed."""
        try:
            changed = live_changes(self.station, new)
        except UserError as exc:
            self.audit.write(who, "config reload", None, None, None, "refused", str(exc))
            raise
        for cfg in changed:
            self.store.save_settings(cfg.name, None)  # the station file is the truth again for this recipe
            rec = self.recipes.recipes[cfg.index]
            new_rec = LoadedRecipe(cfg.model_copy(update={"model": rec.cfg.model}), self._same_model(rec, cfg),
                                   rec.sha256, 0.0, version=rec.version)
            self.recipes.replace(new_rec, close_old=False)
            self.audit.write(who, "config reload", cfg.name, _live(rec.cfg), _live(cfg), "ok")
        if not changed:
            self.audit.write(who, "config reload", None, None, None, "ok", "nothing changed")
        self.station = new
        return [c.name for c in changed]

    def deploy_zip(self, recipe: str, data: bytes | Path, who: str, source: str) -> dict[str, Any]:
        """A bundle sent as a zip of its files (``edge-stpm deploy``, the web app's upload, the drop folder): ``data``
        the zip's bytes or the path of a zip file on disk. Unpacked under ``zip_limits`` (streamed to disk, members
        checked first: encrypted, damaged, links, paths out of the folder, a zip bomb — refused in one UserError,
        audited), then deployed as ``deploy`` does."""
        rec = self._recipe(recipe, who, "deploy")
        tmp = None
        try:
            try:
                tmp = self._unpack(data, source)
            except UserError as exc:
                self.audit.write(who, "deploy", recipe, {"version": rec.version, "sha256": rec.sha256}, None,
                                 "refused", str(exc))
                raise
            return self.deploy(recipe, tmp, who, source)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def _unpack(self, data: bytes | Path, source: str) -> Path:
        """The zip (bytes or a file) unpacked into a new hidden folder of the store; UserError (nothing left) when it
        is too large, unsafe or damaged, or cannot be written."""
        tmp = None
        try:
            size = len(data) if isinstance(data, (bytes, bytearray)) else Path(data).stat().st_size
            if size > MAX_UPLOAD_BYTES:
                raise UserError(f"the zip from {source} is {size / 2**20:.0f} MB, more than a bundle can be "
                                f"({MAX_UPLOAD_BYTES / 2**20:.0f} MB)")
            self.store.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.store.root))
            extract_flat(data, tmp, self.zip_limits, what=f"the zip from {source}")
            return tmp
        except BaseException as exc:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise UserError(f"cannot unpack the zip from {source}: {exc.strerror or exc}") from None
            raise


def zip_bundle(folder: Path) -> bytes:
    """A bundle folder's files (top level, as the manifest lists them) as a zip in memory."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"no bundle folder at {folder}")
    return zip_tree(folder, top_level=True)


SETTING_KEYS = ("threshold", "min_defect_area", "review_band")  # what the web app changes; the next start keeps
LIVE_KEYS = ("threshold", "roi", "ignore_mask", "ignore_polygons", "min_defect_area", "review_band")


def _live(r: Any) -> dict[str, Any]:
    return {k: getattr(r, k) for k in LIVE_KEYS}


def live_changes(old: Any, new: Any) -> list[Any]:
    """The recipes of ``new`` that differ from ``old`` only in what can change live; UserError naming the first key
    that cannot."""
    o, n = old.model_dump(mode="json"), new.model_dump(mode="json")
    for key in o:
        if key not in ("recipes", "recipe") and o[key] != n[key]:
            diff = (next((f"{key}.{k}" for k in o[key] if isinstance(o[key], dict) and o[key][k] != n[key].get(k)),
                         key)
                    if isinstance(o[key], dict) else key)
            raise UserError(f"config reload refused: {diff} changed, which needs a restart; the running configuration "
                            "stays")

    def ident(st: Any) -> list[tuple[Any, ...]]:
        return [(r.index, r.name, r.model, r.precision) for r in st.recipes]

    if ident(old) != ident(new):
        raise UserError("config reload refused: recipes added, removed or given another model or precision (deploy "
                        "models with edge-stpm deploy, or restart); the running configuration stays")
    return [b for a, b in zip(old.recipes, new.recipes, strict=True) if _live(a) != _live(b)]
