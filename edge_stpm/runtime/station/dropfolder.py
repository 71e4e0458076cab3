"""A watched drop folder for deploys (``[store] drop``): put a bundle — a zip of its files, or its folder — into
``DROP/<recipe name>/`` and the box deploys it to that recipe the way ``edge-stpm deploy`` does (verification and
self-test first; the running model stays on any refusal), audited as ``drop folder``.

An item is taken once it has stopped changing (its size and modification time equal on two polls ``interval_s``
apart, so a copy still under way is not read half-written). Afterwards it is moved to ``DROP/<recipe>/.done/`` or
``DROP/<recipe>/.refused/`` (with ``<name>.txt`` saying why), stamped with the time, and one log line says what
happened. A folder named after no recipe is reported once and left alone.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from edge_stpm.contract.errors import UserError
from edge_stpm.contract.files import write_text

DONE, REFUSED = ".done", ".refused"


def _signature(p: Path) -> tuple[int, float]:
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    stats = [f.stat() for f in files]
    return sum(s.st_size for s in stats), max((s.st_mtime for s in stats), default=0.0)


class DropWatcher:
    def __init__(self, control: Any, root: Path, log: Callable[[str], None], interval_s: float = 2.0) -> None:
        self.control, self.root, self.log, self.interval_s = control, Path(root), log, interval_s
        self.seen: dict[Path, tuple[int, float]] = {}
        self.unknown: set[str] = set()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.deployed = self.refused = 0

    def start(self) -> "DropWatcher":
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for r in self.control.recipes.recipes.values():
                (self.root / r.cfg.name).mkdir(exist_ok=True)
        except OSError as exc:
            raise UserError(f"[store] drop: cannot create {self.root}: {exc.strerror or exc}") from None
        self.thread = threading.Thread(target=self._loop, name="drop-folder", daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                self.poll()
            except Exception as exc:  # the watcher never takes the station down
                self.log(f"drop folder: {exc}")

    def poll(self) -> None:
        """One look: deploy what has stopped changing since the last look."""
        now: dict[Path, tuple[int, float]] = {}
        for sub in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if self.control.recipes.by_name(sub.name) is None:
                if sub.name not in self.unknown:
                    self.unknown.add(sub.name)
                    self.log(f"drop folder: {sub} names no recipe of this station; left alone")
                continue
            for item in sorted(p for p in sub.iterdir() if not p.name.startswith(".")):
                if item.is_file() and item.suffix != ".zip":
                    continue
                sig = _signature(item)
                now[item] = sig
                if self.seen.get(item) == sig:
                    self._take(sub.name, item)
                    now.pop(item)
        self.seen = now

    def _take(self, recipe: str, item: Path) -> None:
        who, source = "drop folder", str(item)
        try:
            if item.is_file():
                r = self.control.deploy_zip(recipe, item.read_bytes(), who, source)
            else:
                r = self.control.deploy(recipe, item, who, source)
        except UserError as exc:
            self.refused += 1
            dest = self._move(item, REFUSED)
            write_text(dest.with_name(dest.name + ".txt"), f"{exc}\n")
            self.log(f"drop folder: {item.name} refused for recipe {recipe}: {exc} (moved to {dest})")
            return
        self.deployed += 1
        dest = self._move(item, DONE)
        self.log(f"drop folder: {item.name} deployed to recipe {recipe}: v{r['before']['version']} → "
                 f"v{r['after']['version']} live (moved to {dest})")

    def _move(self, item: Path, where: str) -> Path:
        folder = item.parent / where
        folder.mkdir(exist_ok=True)
        dest = folder / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{item.name}"
        shutil.move(str(item), str(dest))
        return dest

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=30)


def start(station: Any, inspector: Any, log: Callable[[str], None]) -> DropWatcher | None:
    """The station's drop folder, when its file names one and the run has a station control."""
    control = getattr(inspector, "control", None)
    if station is None or station.store.drop is None or control is None:
        return None
    return DropWatcher(control, station.store.drop, log).start()
