"""HTTP-view sinks: the verdict side updates counters and status at once; the picture side hands the newest
overlay to the viewers (app.http.LiveView; JPEG encoding happens on the server thread)."""
from __future__ import annotations

import time
from typing import Any

from edge_stpm.runtime.loop.sinks.base import Result, Sink


class HttpVerdictSink(Sink):
    name = "http"
    queue_size = 256
    unjudged = True  # a recipe with no model yet: the live view still shows its frames

    def __init__(self, view: Any, sources: list[Any]) -> None:
        self.view, self.sources = view, sources

    def take(self, r: Result) -> None:
        src = self.sources[r.source]
        self.view.publish(r.frame_index, None, r.ng, r.inspection.normalised_score, r.inspection.image_threshold,
                          r.fps, {"read": r.read_ms, "infer": r.infer_ms, "verdict": r.verdict_ms},
                          src.dropped, getattr(src, "reconnects", 0), source=r.source,
                          verdict=r.inspection.verdict)


class HttpPictureSink(Sink):
    name = "http-picture"
    picture = True
    queue_size = 2

    def __init__(self, view: Any) -> None:
        self.view = view
        self._last: dict[int, float] = {}  # per source: when the last picture was asked for
        self._chosen: dict[int, str] = {}  # per source: the result last chosen (asked again by the picture stage)

    def wants(self, r: Result) -> bool:
        """An NG thumbnail for the page; a source's first picture; otherwise a picture only while someone watches (a
        stream, or the web app's live page within 2 s) and at most ``stream_fps`` a second per source — viewers see
        no more than that, so drawing every frame would only cost the loop (the pictures' cost does not grow with the
        pages open). The same result asked again (the loop asks, then the picture stage) gets the same answer."""
        if r.ng or self._chosen.get(r.source) == r.result_id:
            return True
        now = time.monotonic()
        first = r.source not in self._last  # a source's first picture: a page has something to ask for
        if not first and not (self.view.viewers > 0 or now - self.view._page_seen < 2.0):
            return False
        if now - self._last.get(r.source, 0.0) < 1.0 / max(self.view.stream_fps, 0.1):
            return False
        self._last[r.source], self._chosen[r.source] = now, r.result_id
        return True

    def take(self, r: Result) -> None:
        latency = None if r.t_picture is None else (r.t_picture - r.t_capture) * 1e3
        rec = r.inspection.recipe or {}
        self.view.publish_picture(r.source, r.frame_index, r.picture, r.ng, r.inspection.normalised_score, latency,
                                  {"verdict": r.inspection.verdict, "result_id": r.result_id,
                                   "recipe": rec.get("name"), "recipe_index": rec.get("index")})
