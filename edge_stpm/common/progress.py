"""Progress for long commands: rich bars on a terminal; plain lines at a steady interval elsewhere (logs, nohup,
CI), where redrawn bars turn into garbled lines after minutes of silence."""
from __future__ import annotations

import os
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
PLAIN_INTERVAL_S = float(os.environ.get("EDGE_STPM_PROGRESS_INTERVAL", "10"))


class PlainProgress:
    """The subset of ``rich.progress.Progress`` the commands use, printing one plain line per task every
    ``interval`` seconds and when a task completes: ``train mobilenet_v2: 120/540 (22%) 35 s, eta 122 s — info``."""

    def __init__(self, disable: bool = False, interval: float = PLAIN_INTERVAL_S) -> None:
        self.disable, self.interval = disable, interval
        self.tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self.tasks.values():
            if not t["done"] and t["completed"] > 0:
                self._print(t)

    def add_task(self, description: str, total: float | None = None, info: str = "", **_: Any) -> int:
        tid = len(self.tasks)
        now = time.monotonic()
        self.tasks[tid] = {"description": description, "total": total, "completed": 0.0, "info": info,
                           "start": now, "last": now, "done": False}
        return tid

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def update(self, task: int, advance: float | None = None, info: str | None = None, **_: Any) -> None:
        t = self.tasks[task]
        if advance:
            t["completed"] += advance
        if info is not None:
            t["info"] = info
        now = time.monotonic()
        finished = bool(t["total"]) and t["completed"] >= t["total"] and not t["done"]
        if finished or now - t["last"] >= self.interval:
            t["last"] = now
            t["done"] = t["done"] or finished
            self._print(t)

    def _print(self, t: dict[str, Any]) -> None:
        if self.disable:
            return
        el = time.monotonic() - t["start"]
        total, done = t["total"], t["completed"]
        if total:
            eta = el / done * (total - done) if done else float("nan")
            head = f"{t['description']}: {done:g}/{total:g} ({100 * done / total:.0f}%) {el:.0f} s, eta {eta:.0f} s"
        else:
            head = f"{t['description']}: {el:.0f} s"
        console.print(head + (f" — {t['info']}" if t["info"] else ""), highlight=False, markup=False, soft_wrap=True)


def bar(quiet: bool = False) -> Any:
    """A progress display with count, elapsed time, ETA and a free-text ``info`` field: a rich bar on a terminal,
    plain lines every ``EDGE_STPM_PROGRESS_INTERVAL`` seconds (default 10) otherwise."""
    if not console.is_terminal:
        return PlainProgress(disable=quiet)
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, disable=quiet, transient=False,
    )
