"""What changes a running station: deploy a bundle to a recipe (verify, self-test, load beside the running model,
swap between two frames), roll back to the previous version the same way, select a recipe — each written to the
audit log with who, before and after, refused in one line with the running model kept when it cannot be done."""
from __future__ import annotations

import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from edge_stpm.contract.errors import UserError
from edge_stpm.contract.files import zip_tree
from edge_stpm.runtime.station.audit import Audit
from edge_stpm.runtime.station.recipes import LoadedRecipe, RecipeSet
from edge_stpm.runtime.station.store import ModelStore, self_test, verify

MAX_UPLOAD_BYTES = 2 * 2**30


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

    def adopt(self) -> None:
        """Every recipe's station-file model is version 0 in the store (its history starts there)."""
        for r in self.recipes.recipes.values():
            self.store.adopt(r.cfg.name, Path(r.cfg.model))
            r.version = self.store.versions(r.cfg.name)["current"]

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
        from edge_stpm.runtime.inspector import Inspector

        t0 = time.perf_counter()
        insp = Inspector.load(Path(entry["path"]), self.backend, rec.cfg.threshold, rec.cfg.precision,
                              threads=self.threads, frame_path=self.frame_path)
        try:
            test = self_test(insp, Path(entry["path"]))
        except BaseException:
            insp.close()
            raise
        new = LoadedRecipe(rec.cfg.model_copy(update={"model": entry["path"]}), insp, entry["sha256"],
                           time.perf_counter() - t0, version=entry["version"])
        return new, test

    def deploy(self, recipe: str, bundle: Path, who: str, source: str) -> dict[str, Any]:
        """A bundle folder to ``recipe``: verified (manifest, schemas, TensorRT's rules, same backbone and size as
        the running model), copied into the store, loaded beside the running model, self-tested, then swapped in
        between two frames. Any failure: one UserError, the running model stays, the attempt is audited."""
        rec = self._recipe(recipe, who, "deploy")
        before = {"version": rec.version, "sha256": rec.sha256}
        entry = None
        try:
            md = verify(bundle, like=rec.inspector)
            entry = self.store.add(recipe, bundle, who, source, md)
            new, test = self._load(rec, entry)
        except UserError as exc:
            if entry is not None:
                self.store.refuse(recipe, entry["version"], str(exc))
            self.audit.write(who, "deploy", recipe, before, None, "refused", str(exc))
            raise
        t0 = time.perf_counter()
        self.recipes.replace(new)
        swap_ms = (time.perf_counter() - t0) * 1e3
        self.store.set_current(recipe, entry["version"])
        after = {"version": entry["version"], "sha256": entry["sha256"]}
        self.audit.write(who, "deploy", recipe, before, after, "ok",
                         f"from {source}; self-test {test['precision']} max error {test['max_error_threshold_units']:.2g}"
                         f" × threshold; load {new.load_s:.2f} s")
        return {"recipe": recipe, "before": before, "after": after, "self_test": test, "load_s": new.load_s,
                "swap_ms": swap_ms}

    def rollback(self, recipe: str, who: str) -> dict[str, Any]:
        """Back to the version live before the current one, loaded and self-tested the same way."""
        rec = self._recipe(recipe, who, "rollback")
        before = {"version": rec.version, "sha256": rec.sha256}
        prev = self.store.previous(recipe)
        try:
            if prev is None:
                raise UserError(f"recipe {recipe} has no earlier version to roll back to")
            new, test = self._load(rec, prev)
        except UserError as exc:
            self.audit.write(who, "rollback", recipe, before, None, "refused", str(exc))
            raise
        self.recipes.replace(new)
        self.store.set_current(recipe, prev["version"])
        after = {"version": prev["version"], "sha256": prev["sha256"]}
        self.audit.write(who, "rollback", recipe, before, after, "ok", f"load {new.load_s:.2f} s")
        return {"recipe": recipe, "before": before, "after": after, "self_test": test}

    def reload(self, new: Any, who: str = "SIGHUP") -> list[str]:
        """A re-read station file applied between two frames where it changes only what can change live — recipes'
        thresholds, ROI, ignore mask and minimum area; anything else (sources, outputs, servers, recipes added,
        removed or given other models) is refused in one UserError and the running configuration stays. Returns the
        recipes changed."""
        from edge_stpm.runtime.inspector import Inspector

        try:
            changed = live_changes(self.station, new)
        except UserError as exc:
            self.audit.write(who, "config reload", None, None, None, "refused", str(exc))
            raise
        for cfg in changed:
            rec = self.recipes.recipes[cfg.index]
            insp = Inspector(rec.inspector.backend, cfg.threshold, self.frame_path)
            new_rec = LoadedRecipe(cfg.model_copy(update={"model": rec.cfg.model}), insp, rec.sha256, 0.0,
                                   version=rec.version)
            self.recipes.replace(new_rec, close_old=False)
            self.audit.write(who, "config reload", cfg.name, _live(rec.cfg), _live(cfg), "ok")
        if not changed:
            self.audit.write(who, "config reload", None, None, None, "ok", "nothing changed")
        self.station = new
        return [c.name for c in changed]

    def deploy_zip(self, recipe: str, data: bytes, who: str, source: str) -> dict[str, Any]:
        """A bundle sent as a zip of its files (``edge-stpm deploy``, the web app's upload)."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise UserError(f"the upload is {len(data) / 2**20:.0f} MB, more than a bundle can be")
        tmp = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.store.root))
        try:
            try:
                with zipfile.ZipFile(BytesIO(data)) as z:
                    for info in z.infolist():
                        name = Path(info.filename).name
                        if info.is_dir() or not name or name != info.filename.split("/")[-1] or name.startswith("."):
                            continue
                        (tmp / name).write_bytes(z.read(info))
            except zipfile.BadZipFile:
                err = UserError("the upload is not a zip of a bundle's files")
                self.audit.write(who, "deploy", recipe, None, None, "refused", str(err))
                raise err from None
            return self.deploy(recipe, tmp, who, source)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def zip_bundle(folder: Path) -> bytes:
    """A bundle folder's files (top level, as the manifest lists them) as a zip in memory."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"no bundle folder at {folder}")
    return zip_tree(folder, top_level=True)


LIVE_KEYS = ("threshold", "roi", "ignore_mask", "ignore_polygons", "min_defect_area", "review_band")


def _live(r: Any) -> dict[str, Any]:
    return {k: getattr(r, k) for k in LIVE_KEYS}


def live_changes(old: Any, new: Any) -> list[Any]:
    """The recipes of ``new`` that differ from ``old`` only in what can change live; UserError naming the first key
    that cannot."""
    o, n = old.model_dump(mode="json"), new.model_dump(mode="json")
    for key in o:
        if key not in ("recipes", "recipe") and o[key] != n[key]:
            diff = next((f"{key}.{k}" for k in o[key] if isinstance(o[key], dict) and o[key][k] != n[key].get(k)), key) \
                if isinstance(o[key], dict) else key
            raise UserError(f"config reload refused: {diff} changed, which needs a restart; the running configuration "
                            "stays")
    ident = lambda st: [(r.index, r.name, r.model, r.precision) for r in st.recipes]  # noqa: E731
    if ident(old) != ident(new):
        raise UserError("config reload refused: recipes added, removed or given another model or precision (deploy "
                        "models with edge-stpm deploy, or restart); the running configuration stays")
    return [b for a, b in zip(old.recipes, new.recipes) if _live(a) != _live(b)]
