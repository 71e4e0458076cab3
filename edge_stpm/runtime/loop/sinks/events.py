"""Event-log sink: one JSON line per NG frame, flushed per line (a power cut loses at most the line being written)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

from edge_stpm.common.files import ensure_dir
from edge_stpm.runtime.loop.sinks.base import Result, Sink


class EventLog:
    """JSON Lines appended to ``path``."""

    def __init__(self, path: Path) -> None:
        ensure_dir(Path(path).parent)
        self.fh: TextIO = open(path, "a", encoding="utf-8")

    def write(self, event: dict[str, Any]) -> None:
        self.write_many([event])

    def write_many(self, events: list[dict[str, Any]]) -> None:
        if events:
            self.fh.write("".join(json.dumps(e) + "\n" for e in events))
            self.fh.flush()

    def close(self) -> None:
        os.fsync(self.fh.fileno())
        self.fh.close()


class EventSink(Sink):
    """NG verdicts into the event log, as soon as inference ends (lossless: an NG line is never dropped)."""

    name = "events"
    lossless = True
    queue_size = 1024

    def __init__(self, path: Path, several_sources: bool) -> None:
        self.log = EventLog(path)
        self.several = several_sources

    def wants(self, result: Result) -> bool:
        return result.ng

    def take(self, result: Result) -> None:
        self.log.write(result.event(self.several))

    batch_max = 256

    def take_batch(self, results: list[Result]) -> None:
        """NG lines of the results that queued up meanwhile, written and flushed together."""
        self.log.write_many([r.event(self.several) for r in results if r.ng])

    def close(self) -> None:
        self.log.close()
