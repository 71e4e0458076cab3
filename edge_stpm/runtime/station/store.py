"""The model store on the box: every bundle a recipe was given, kept under its recipe with version, time and who
deployed it; verified before it goes live (manifest, schemas, TensorRT's parser rules, and the bundle's self-test:
its reference images must score as export measured, within the precision's tolerance).

Layout: ``ROOT/<recipe>/v<N>/`` (a bundle, copied in under a hidden name and renamed when complete) and
``ROOT/<recipe>/versions.json`` (written atomically): ``[{version, sha256, deployed_at, by, source, backbone,
image_size, status}]`` with ``current`` naming the live one and ``history`` the versions that were live, oldest
first (the current one last): a rollback returns to the one before the current one, the model that ran before it —
not the next lower version number. A version folder the index does not list is not a version (what a deploy stopped
half-way — a full disk — left): the next deploy to that recipe removes it. Beside the recipes: ``settings.json``
(settings changed from the web app), ``recipes.json`` (recipes created on the box) and ``.deleted/`` (the folders of
created recipes deleted since, moved there whole and kept).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import write_json
from edge_stpm.contract.artifacts import SELFTEST, model_sha256, onnx_path, read_onnx_metadata, verify_bundle
from edge_stpm.contract.schema import SELFTEST as SELFTEST_SCHEMA, check
from edge_stpm.contract.trt_rules import check_file


def self_test(inspector: Any, bundle: Path) -> dict[str, Any]:
    """Run the bundle's reference images through ``inspector``'s backend and compare each score with the one
    export measured for that precision; UserError naming the image and the gap when one is off."""
    path = Path(bundle) / SELFTEST
    if not path.is_file():
        raise UserError(f"bundle {bundle} has no self-test ({SELFTEST}): re-export it with this edge-stpm")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not JSON; re-export the bundle") from None
    check(doc, SELFTEST_SCHEMA, str(path), "re-export the bundle")
    b = inspector.backend
    prec = b.precision if b.precision in doc["scores"] else "fp32"
    want = np.array(doc["scores"].get(prec, []), np.float64)
    imgs = [cv2.imread(str(Path(bundle) / n), cv2.IMREAD_COLOR) for n in doc["images"]]
    if len(want) != len(imgs) or any(i is None for i in imgs):
        raise UserError(f"{path}: the reference images or their {prec} scores are missing; re-export the bundle")
    got = np.asarray(b.infer_any(np.stack(cast("list[np.ndarray]", imgs)))[1], np.float64)  # no None: checked above
    thr = float(b.metadata["thresholds"]["image"])
    tol = float(doc["tolerance_threshold_units"].get(prec, 0.01))
    err = np.abs(got - want) / thr
    worst = int(np.argmax(err))
    if err[worst] > tol:
        raise UserError(f"bundle {bundle} fails its self-test on {b.name} {prec}: {doc['images'][worst]} scores "
                        f"{got[worst]:.5g}, export measured {want[worst]:.5g} (off by {err[worst]:.3g} × the "
                        f"threshold, tolerance {tol:g})")
    return {"precision": prec, "backend": b.name, "images": len(imgs), "max_error_threshold_units": float(err.max()),
            "tolerance": tol}


def refuse_links(folder: Path) -> None:
    """UserError when a bundle folder is or holds anything but plain files and folders — a symbolic link could point
    anywhere on the box, a FIFO would block the reader — naming the first."""
    folder = Path(folder)
    if folder.is_symlink():
        raise UserError(f"{folder} is a symbolic link: give the bundle's own folder")
    for parent, dirs, files in os.walk(folder):  # links to folders are listed in dirs, never followed
        for name in sorted(dirs + files):
            p = Path(parent) / name
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise UserError(f"bundle {folder} holds a symbolic link, {p.relative_to(folder)}: a bundle is "
                                "plain files (copy the files, not links to them)")
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise UserError(f"bundle {folder} holds {p.relative_to(folder)}, which is not a plain file")


def verify(bundle: Path, like: Any | None = None) -> dict[str, Any]:
    """Manifest (every file's sha256), the graphs' metadata schema and TensorRT's parser rules; with ``like`` (the
    running recipe's inspector) the same backbone and input size. Returns the FP32 graph's metadata."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise UserError(f"no bundle folder at {bundle}")
    verify_bundle(bundle)
    md = read_onnx_metadata(onnx_path(bundle, "fp32"))
    for g in sorted([*bundle.glob("model_*.onnx"), *bundle.glob("frame_*.onnx")]):  # frame graphs too
        problems = check_file(g)
        if problems:
            raise UserError(f"bundle {bundle}: {g.name} breaks TensorRT's parser rules: {problems[0]}")
    if like is not None:
        run = like.backend.metadata
        for key in ("backbone", "image_size"):
            if md.get(key) != run.get(key):
                raise UserError(f"bundle {bundle} is {key} {md.get(key)}, the running model {run.get(key)}: a "
                                "recipe keeps its camera set-up; deploy it to a new recipe instead")
    return md


class ModelStore:
    """The bundles of every recipe on this box (see the module docstring). Thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.lock = threading.Lock()

    SETTINGS = "settings.json"  # recipe settings changed from the web app: what the next start applies

    def settings(self) -> dict[str, Any]:
        """Recipe settings changed while running (threshold, minimum defect area, review band), per recipe name,
        with who and when; {} when none (or the file is unreadable: then the station file's values run)."""
        p = self.root / self.SETTINGS
        try:
            doc = json.loads(p.read_text()) if p.is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def save_settings(self, recipe: str, values: dict[str, Any] | None) -> None:
        """Store (or with None forget) one recipe's settings changed while running; written atomically."""
        with self.lock:
            doc = self.settings()
            if values is None:
                doc.pop(recipe, None)
            else:
                doc[recipe] = values
            write_json(self.root / self.SETTINGS, doc)

    CREATED = "recipes.json"  # recipes created on the box (runtime/station/created.py): what the next start adds

    def created(self) -> list[dict[str, Any]]:
        """The recipes created on the box, oldest first; [] when none. A damaged file is one UserError (it is never
        written over: the recipes in it would be lost)."""
        p = self.root / self.CREATED
        if not p.is_file():
            return []
        doc = _read_json(p, "damaged (not JSON); move it away (the recipes created on the box are in it)",
                         "cannot read")
        recipes = doc.get("recipes") if isinstance(doc, dict) else None
        if not isinstance(recipes, list):
            raise UserError(f"{p}: damaged (no list of recipes); move it away")
        return [r for r in recipes if isinstance(r, dict)]

    def add_created(self, entry: dict[str, Any]) -> None:
        """One more created recipe, written atomically (the whole file, under the store's lock)."""
        with self.lock:
            doc = {"version": 1, "recipes": [*self.created(), entry]}
            try:
                write_json(self.root / self.CREATED, doc)
            except OSError as exc:
                raise UserError(f"cannot write {self.root / self.CREATED}: {exc.strerror or exc}") from None

    def update_created(self, name: str, index: int, entry: dict[str, Any] | None) -> dict[str, Any]:
        """The created recipe ``name`` with PLC index ``index`` replaced by ``entry`` (a new name or index), or with
        None taken out; the whole file written atomically (a temporary name, then renamed) under the store's lock.
        Returns the entry it had; UserError when none matches or the file cannot be written (then it is unchanged)."""
        with self.lock:
            recipes = self.created()
            at = next((i for i, e in enumerate(recipes) if e.get("name") == name and e.get("index") == index), None)
            if at is None:
                raise UserError(f"recipe {name} (PLC index {index}) is not in {self.root / self.CREATED}: it was "
                                "not created on this box")
            old = recipes[at]
            recipes[at:at + 1] = [] if entry is None else [entry]
            try:
                write_json(self.root / self.CREATED, {"version": 1, "recipes": recipes})
            except OSError as exc:
                raise UserError(f"cannot write {self.root / self.CREATED}: {exc.strerror or exc}") from None
            return old

    DELETED = ".deleted"  # the folders of deleted recipes (kept: never removed by the box)

    def archive(self, recipe: str) -> Path | None:
        """A deleted recipe's folder (its versions, their index) moved whole, by one rename, to
        ``ROOT/.deleted/<recipe>-<UTC time>/``: kept on disk, and a recipe created later under the same name starts
        with none of them. None when it has no folder; OSError when it cannot be moved (it stays where it is)."""
        src = self.root / recipe
        with self.lock:
            if not src.is_dir():
                return None
            (self.root / self.DELETED).mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            dst, n = self.root / self.DELETED / f"{recipe}-{stamp}", 1
            while dst.exists():  # deleted twice within a second
                dst, n = dst.with_name(f"{recipe}-{stamp}-{n}"), n + 1
            src.rename(dst)
            return dst

    def _index(self, recipe: str) -> Path:
        return self.root / recipe / "versions.json"

    def versions(self, recipe: str) -> dict[str, Any]:
        p = self._index(recipe)
        if not p.is_file():
            return {"recipe": recipe, "current": None, "versions": [], "history": []}
        doc = _read_json(p, "damaged model store index; move it away to start the recipe's history anew",
                         "cannot read the model store index")
        doc.setdefault("history", _old_history(doc))
        return doc

    def add(self, recipe: str, bundle: Path, by: str, source: str, md: dict[str, Any]) -> dict[str, Any]:
        """Copy a verified bundle in as the recipe's next version (not yet current); returns its entry. A full disk
        (any OSError) is one UserError and leaves no version folder behind."""
        with self.lock:
            doc = self.versions(recipe)
            n = 1 + max((v["version"] for v in doc["versions"]), default=0)
            dst = self.root / recipe / f"v{n}"
            tmp = dst.with_name(f".v{n}.partial")
            try:
                for stale in (tmp, dst):  # not in the index: left by a deploy that stopped half-way
                    if stale.exists():
                        shutil.rmtree(stale)
                shutil.copytree(bundle, tmp)
                tmp.rename(dst)
                entry = {"version": n, "path": str(dst), "sha256": model_sha256(dst),
                         "deployed_at": time.time(), "by": by, "source": source, "backbone": md.get("backbone"),
                         "image_size": md.get("image_size"), "status": "verified"}
                doc["versions"].append(entry)
                write_json(self._index(recipe), doc)
            except (OSError, UserError) as exc:
                for p in (tmp, dst):
                    shutil.rmtree(p, ignore_errors=True)
                if isinstance(exc, UserError):
                    raise
                raise UserError(f"cannot copy the bundle into the model store ({self.root / recipe}): "
                                f"{exc.strerror or exc}; the running model stays") from None
            return entry

    def set_current(self, recipe: str, version: int, status: str = "live", rollback: bool = False) -> None:
        """``version`` is live now: after a deploy it joins the history; after a rollback (``rollback``, to the
        version before the current one in the history) the current one leaves it."""
        with self.lock:
            doc = self.versions(recipe)
            for v in doc["versions"]:
                if v["version"] == version:
                    v["status"] = status
                elif v.get("status") == "live":
                    v["status"] = "retired"
            hist = doc["history"]
            if rollback and len(hist) >= 2 and hist[-2] == version:
                hist.pop()
            elif not hist or hist[-1] != version:
                hist.append(version)
            del hist[:-HISTORY_MAX]
            doc["current"] = version
            write_json(self._index(recipe), doc)

    def refuse(self, recipe: str, version: int, why: str) -> None:
        """A version that failed verification or its self-test: marked refused, its files removed."""
        with self.lock:
            doc = self.versions(recipe)
            for v in doc["versions"]:
                if v["version"] == version:
                    v["status"], v["why"] = "refused", why
                    shutil.rmtree(v["path"], ignore_errors=True)
            write_json(self._index(recipe), doc)

    def previous(self, recipe: str) -> dict[str, Any] | None:
        """The version that was live before the current one (for rollback: the model that ran before this one, from
        the recipe's history), or None."""
        doc = self.versions(recipe)
        hist = doc["history"]
        if len(hist) < 2 or hist[-1] != doc["current"]:
            return None
        entry = next((v for v in doc["versions"] if v["version"] == hist[-2]), None)
        return entry if entry is not None and entry.get("status") in ("retired", "live") else None

    def adopt(self, recipe: str, model: Path) -> None:
        """Record the station file's own model as version 0 of a recipe the store does not know yet."""
        with self.lock:
            doc = self.versions(recipe)
            if doc["versions"]:
                return
            doc["versions"].append({"version": 0, "path": str(model), "sha256": model_sha256(Path(model)),
                                    "deployed_at": time.time(), "by": "station file", "source": str(model),
                                    "status": "live"})
            doc["current"], doc["history"] = 0, [0]
            write_json(self._index(recipe), doc)


HISTORY_MAX = 1000  # versions kept in a recipe's history of what was live


def _old_history(doc: dict[str, Any]) -> list[int]:
    """The history of an index written before the store kept one: the versions live or retired up to the current
    one, in version order (what rollback followed then)."""
    cur = doc.get("current")
    if cur is None:
        return []
    return [v["version"] for v in doc.get("versions", []) if v["version"] < cur
            and v.get("status") in ("retired", "live")] + [cur]


def _read_json(p: Path, damaged: str, unreadable: str) -> Any:
    """``p``'s JSON, or one UserError: ``damaged`` when it is not JSON, ``unreadable`` with the OS's reason."""
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{p}: {damaged}") from None
    except OSError as exc:
        raise UserError(f"{p}: {unreadable}: {exc.strerror or exc}") from None
