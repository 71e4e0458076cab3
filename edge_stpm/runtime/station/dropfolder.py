"""A watched drop folder for deploys (``[store] drop``): put a bundle — a zip of its files, or its folder — into
``DROP/<recipe name>/`` and the box deploys it to that recipe the way ``edge-stpm deploy`` does (verification and
self-test first; the running model stays on any refusal), audited as ``drop folder``.

An item is taken once it has stopped changing (its size and modification time equal on two polls ``interval_s``
apart, so a copy still under way is not read half-written). Afterwards it is moved to ``DROP/<recipe>/.done/`` or
``DROP/<recipe>/.refused/`` (with ``<name>.txt`` saying why), stamped with the time, and one log line says what
happened. Any failure on an item refuses that item (a damaged or unsafe zip, a folder holding links, a full disk, a
bug): one bad item never stops the items after it. An item that cannot even be moved away is reported once and left
alone. A folder named after no recipe is reported once and left alone.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import write_text

DONE, REFUSED = ".done", ".refused"


def _signature(p: Path) -> tuple[int, int, float]:
    """(entries, total size in bytes, newest modification time) of an item, links not followed: a copy still under
    way changes it."""
    stats = [p.lstat()]
    if p.is_dir() and not p.is_symlink():
        for parent, dirs, files in os.walk(p):
            stats += [os.lstat(os.path.join(parent, n)) for n in dirs + files]
    return len(stats), sum(s.st_size for s in stats), max(s.st_mtime for s in stats)


def _why(exc: BaseException) -> str:
    """One line saying why an item was refused: a UserError's own line, anything else named by its type."""
    return str(exc) if isinstance(exc, UserError) else str(UserError(f"{type(exc).__name__}: {exc}"))


class DropWatcher:
    def __init__(self, control: Any, root: Path, log: Callable[[str], None], interval_s: float = 2.0) -> None:
        self.control, self.root, self.log, self.interval_s = control, Path(root), log, interval_s
        self.seen: dict[Path, tuple[int, int, float]] = {}
        self.unknown: set[str] = set()
        self.stuck: set[Path] = set()  # items that could be neither deployed nor moved away: reported once
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
        now: dict[Path, tuple[int, int, float]] = {}
        for sub in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if self.control.recipes.by_name(sub.name) is None:
                if sub.name not in self.unknown:
                    self.unknown.add(sub.name)
                    self.log(f"drop folder: {sub} names no recipe of this station; left alone")
                continue
            for item in sorted(p for p in sub.iterdir() if not p.name.startswith(".")):
                if item in self.stuck or (item.is_file() and item.suffix != ".zip"):
                    continue
                try:
                    sig = _signature(item)
                except OSError:  # vanished or unreadable between two looks: looked at again next time
                    continue
                now[item] = sig
                if self.seen.get(item) == sig:
                    self._take(sub.name, item)
                    now.pop(item)
        self.seen = now

    def _take(self, recipe: str, item: Path) -> None:
        """Deploy one item and move it to ``.done/``; on any failure move it to ``.refused/`` with its reason."""
        who, source = "drop folder", str(item)
        try:
            if item.is_symlink():
                raise UserError(f"{item.name} is a symbolic link: put the zip or the bundle folder itself here")
            if item.is_file():
                r = self.control.deploy_zip(recipe, item, who, source)
            else:
                r = self.control.deploy(recipe, item, who, source)
        except Exception as exc:  # one bad item never stops the drop folder
            self._refuse(recipe, item, _why(exc))
            return
        self.deployed += 1
        try:
            dest = self._move(item, DONE)
        except OSError as exc:
            self._stuck(item, f"deployed, but cannot be moved to {DONE}/: {exc.strerror or exc}")
            return
        self.log(f"drop folder: {item.name} deployed to recipe {recipe}: v{r['before']['version']} → "
                 f"v{r['after']['version']} live (moved to {dest})")

    def _refuse(self, recipe: str, item: Path, why: str) -> None:
        """``item`` to ``.refused/`` with ``<name>.txt`` saying ``why``."""
        self.refused += 1
        try:
            dest = self._move(item, REFUSED)
        except OSError as exc:
            self._stuck(item, f"refused ({why}), but cannot be moved to {REFUSED}/: {exc.strerror or exc}")
            return
        try:
            write_text(dest.with_name(dest.name + ".txt"), f"{why}\n")
        except UserError as exc:
            why += f" (no reason file: {exc})"
        self.log(f"drop folder: {item.name} refused for recipe {recipe}: {why} (moved to {dest})")

    def _stuck(self, item: Path, what: str) -> None:
        self.stuck.add(item)
        self.log(f"drop folder: {item.name} {what}; left where it is, not looked at again until the station "
                 "restarts")

    def _move(self, item: Path, where: str) -> Path:
        folder = item.parent / where
        folder.mkdir(exist_ok=True)
        dest = folder / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{item.name}"
        n = 1
        while dest.exists() or dest.is_symlink():  # the same name dropped twice within a second
            n += 1
            dest = folder / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{n}-{item.name}"
        shutil.move(str(item), str(dest))
        return dest

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=30)


def start(station: Any, control: Any, log: Callable[[str], None]) -> DropWatcher | None:
    """The station's drop folder, when its file names one (``control``: the station's StationControl)."""
    if station is None or station.store.drop is None or control is None:
        return None
    return DropWatcher(control, station.store.drop, log).start()
