"""The box's own fit as a background job (the web app's "new version from collected parts"): one at a time, at a
lower CPU priority than the line, with progress, ETA and cancel; the finished bundle waits for the engineer's
decision — deploy it (through the station's verify → self-test → swap path) or discard it."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import cv2

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import data_dir
from edge_stpm.common.images import list_images
from edge_stpm.contract.scale import ScoreScale
from edge_stpm.contract.tiles import TileGrid
from edge_stpm.runtime.inspector import Inspector
from edge_stpm.runtime.learn.fit import FitConfig, fit
from edge_stpm.runtime.learn.pack import TEACHER_JSON, read_pack
from edge_stpm.runtime.learn.update import UpdateConfig, update

NICE = 10  # the fit thread's niceness: the line's threads keep theirs (0)


class Cancelled(Exception):
    """The engineer cancelled the fit (raised from its progress callback; fit then removes what it wrote)."""


class FitJob:
    """The one fit job of a station: ``start`` → ``status`` (progress, then the report card) → ``take`` (deploy) or
    ``discard``; ``cancel`` while it runs. Thread-safe."""

    def __init__(self, work: Path, nice: int = NICE) -> None:
        self.work, self.nice = Path(work), nice
        self.lock = threading.Lock()
        self.cancel_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.state: dict[str, Any] = {"state": "idle"}

    def status(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.state)

    def start(self, recipe: str, teacher: Path, data: Path, who: str, coreset_chunk: int = 0,
              tiles: TileGrid | None = None, tiles_given: bool = False) -> dict[str, Any]:
        """Fit a new model of ``recipe`` from the good parts in ``data`` with the teacher pack ``teacher``; with
        ``tiles_given``, tiled by ``tiles`` (None: the whole frame), else as the teacher bundle's own grid."""
        def work(out: Path) -> dict[str, Any]:
            return fit(FitConfig(Path(teacher), Path(data), out, chunk=coreset_chunk, tiles=tiles,
                                 tiles_from_pack=not tiles_given), self._progress)

        return self._start(recipe, data, who, "fit", work)

    def start_update(self, recipe: str, live: Path, data: Path, who: str, owned: bool = False) -> dict[str, Any]:
        """The live bundle ``live`` of ``recipe`` with the reviewed good parts of ``data`` (a dataset folder) in its
        memory (``update.py``), then both models judge the reviewed parts (``compare``) for the report card.
        ``owned``: ``data`` was made for this job and is removed when it ends."""
        def work(out: Path) -> dict[str, Any]:
            try:
                report = update(UpdateConfig(Path(live), Path(data), out), self._progress)
                self._progress("compare with the live model", 0, 1)
                return report | {"compare": compare(Path(live), out, Path(data))}
            finally:
                if owned:
                    shutil.rmtree(data, ignore_errors=True)

        return self._start(recipe, data, who, "update", work)

    def _start(self, recipe: str, data: Path, who: str, kind: str, work: Any) -> dict[str, Any]:
        with self.lock:
            if self.state["state"] in ("running", "done"):
                raise UserError("a fit is " + ("running" if self.state["state"] == "running" else
                                               "waiting for deploy or discard") + ": one at a time")
            out = self.work / f"{recipe}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            self.cancel_event.clear()
            self.state = {"state": "running", "kind": kind, "recipe": recipe, "by": who, "data": str(data),
                          "stage": "starting", "done": 0, "total": 0, "started": time.time(), "eta_s": None}
        self.thread = threading.Thread(target=self._run, args=(work, out), name="edge-stpm-fit", daemon=True)
        self.thread.start()
        return self.status()

    def _progress(self, stage: str, done: int, total: int) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()
        with self.lock:
            t0 = self.state.setdefault("stage_started", {}).setdefault(stage, time.monotonic())
            el = time.monotonic() - t0
            eta = el / done * (total - done) if done else None
            self.state.update(stage=stage, done=done, total=total, eta_s=eta)

    def _run(self, work: Any, out: Path) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)  # this thread only (Linux)
        except (OSError, AttributeError):
            pass
        try:
            report = work(out)
        except Cancelled:
            self._end("cancelled", "cancelled by the engineer; nothing was kept")
        except UserError as exc:
            self._end("failed", str(exc))
        except Exception as exc:  # noqa: BLE001  (a job must end in a state the page can show)
            self._end("failed", f"{type(exc).__name__}: {exc}")
        else:
            card = report_card(report, out)
            with self.lock:
                self.state.update(state="done", bundle=str(out), card=card, ended=time.time())

    def _end(self, state: str, why: str) -> None:
        with self.lock:
            self.state.update(state=state, error=why, ended=time.time())

    def cancel(self) -> dict[str, Any]:
        if self.status()["state"] != "running":
            raise UserError("no fit is running")
        self.cancel_event.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
        return self.status()

    def take(self) -> tuple[str, Path]:
        """(recipe, bundle) of the finished fit, for the deploy; the job is idle again after it."""
        st = self.status()
        if st["state"] != "done":
            raise UserError("no finished fit to deploy")
        with self.lock:
            self.state = {"state": "idle"}
        return st["recipe"], Path(st["bundle"])

    def discard(self) -> dict[str, Any]:
        st = self.status()
        if st["state"] == "running":
            raise UserError("the fit is running: cancel it first")
        if st.get("bundle"):
            shutil.rmtree(st["bundle"], ignore_errors=True)
        with self.lock:
            self.state = {"state": "idle"}
        return self.status()


def report_card(report: dict[str, Any], bundle: Path) -> dict[str, Any]:
    """What the engineer decides on: the no-defect check, the thresholds, the held-out good parts' scores on the
    score scale (p50 / p95), the bank, the seconds."""
    thr = report["thresholds"]
    sc = ScoreScale.of(thr)
    good = thr.get("good_scores", {})
    return {"no_defect_check": report["no_defect_check"]["mean"],
            "no_defect_kinds": {k: v["image_auroc"] for k, v in report["no_defect_check"]["kinds"].items()},
            "image_threshold": thr["image"], "pixel_threshold": thr["pixel"],
            "good_p50": round(sc.image(good["p50"]), 3) if "p50" in good else None,
            "good_p95": round(sc.image(good["p95"]), 3) if "p95" in good else None,
            "images": report["images"], "held_out": report["held_out"], "entries": report["memory"]["entries"],
            "tiles": report.get("tiles"), "warnings": list(report.get("warnings", [])),
            "seconds": round(float(report["seconds"]["total"]), 1), "bundle": str(bundle),
            "update": report["memory_updates"][-1] if report.get("memory_updates") else None,
            "compare": report.get("compare")}


def compare(live: Path, new: Path, data: Path) -> dict[str, Any]:
    """Both models on the reviewed parts of a dataset folder, each at its own threshold: how many reviewed good
    parts (``train/good`` and ``test/good``) each judges NG, how many of the held-out ones (``test/good``: the update
    did not learn them, so they are the fair figure) and how many reviewed defects (``test/<type>``) each catches —
    what the engineer weighs before deploying."""
    def read(paths: list[Path]) -> list[Any]:
        return [im for im in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths) if im is not None]

    def folder(sub: str) -> list[Any]:
        return read(list_images(data / sub)) if (data / sub).is_dir() else []

    learned, held = folder("train/good"), folder("test/good")
    bad = read([p for d in sorted((data / "test").glob("*")) if d.is_dir() and d.name != "good"
                for p in list_images(d)])
    out: dict[str, Any] = {"good": len(learned) + len(held), "held_out_good": len(held), "defects": len(bad)}
    for name, model in (("live", live), ("new", new)):
        insp = Inspector.load(model, "onnxruntime")
        try:
            held_ng = sum(insp.inspect(im).ng for im in held)
            out[name] = {"good_ng": sum(insp.inspect(im).ng for im in learned) + held_ng, "held_out_good_ng": held_ng,
                         "defects_ng": sum(insp.inspect(im).ng for im in bad)}
        finally:
            insp.close()
    return out


def teacher_for(model: Path | None) -> Path:
    """The teacher pack a recipe's next version is fitted with: the one its live bundle carries (every bundle fit
    makes has one), else the box's own (``$XDG_DATA_HOME/edge-stpm/teacher``: copy one there, made by
    ``edge-stpm teacher``)."""
    for p in ([Path(model)] if model is not None else []) + [data_dir() / "teacher"]:
        if (p / TEACHER_JSON).is_file():
            return p
    raise UserError(f"no teacher pack on this box: the recipe's bundle carries none and {data_dir() / 'teacher'} "
                    "has none (make one with edge-stpm teacher on a training install and copy it there)")


def same_teacher(teacher: Path, live: dict[str, Any], recipe: str) -> None:
    """Refuse, before any work, a teacher pack whose backbone or input size differs from the recipe's live model
    (its new version could never be deployed: the swap needs the same backbone and size)."""
    doc = read_pack(teacher).doc
    for key in ("backbone", "image_size"):
        if live.get(key) is not None and doc[key] != live[key]:
            raise UserError(f"the teacher pack {teacher} is for {key} {doc[key]}, the live model of {recipe} has "
                            f"{live[key]}: a new version must match it (put a pack of {live[key]} there, made with "
                            "edge-stpm teacher)")


def collection_folder(root: Path, recipe: str, name: Any = None) -> Path:
    """A collection of this station (``root/<recipe>-<UTC time>/``, as the Recipes page collects): the one named,
    else the recipe's newest. Only a direct child of ``root`` is accepted."""
    root = Path(root)
    if name is not None:
        name = str(name)
        p = root / name
        if "/" in name or "\\" in name or name.startswith(".") or not (p / "train" / "good").is_dir():
            raise UserError(f"no collection named {name!r} on this station")
        return p
    found = sorted(p for p in root.glob(f"{recipe}-*") if (p / "train" / "good").is_dir())
    if not found:
        raise UserError(f"no collection of recipe {recipe} yet: collect good parts first (Recipes page)")
    return found[-1]
