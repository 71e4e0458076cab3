"""The live view's picture sink decides once per result: the loop asks whether a result's picture is wanted, then
the picture stage asks again before handing it over — both must get the same answer, or an OK frame chosen for a
viewer is drawn and then dropped (only NG frames reached the page before 2026-12-07)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from edge_stpm.runtime.inspector import InspectionResult, NoModel
from edge_stpm.runtime.loop.sinks.base import Result
from edge_stpm.runtime.loop.sinks.http import HttpPictureSink


def _result(i: int, ng: bool = False, judged: bool = True) -> Result:
    img = np.zeros((8, 8, 3), np.uint8)
    ins = (InspectionResult(0.1, 0.1, ng, np.zeros((1, 1), np.float32), (8, 8), "stretch", 1.0) if judged
           else NoModel().inspect(img))
    return Result(i, 0, "x", i, img, ins, 0.0, 0.0, time.time(), 0.0, 0.0, result_id=f"r{i}")


def test_a_chosen_picture_is_still_wanted_when_asked_again() -> None:
    view = SimpleNamespace(viewers=1, _page_seen=0.0, stream_fps=5.0)
    sink = HttpPictureSink(view)
    a = _result(1)
    assert sink.wants(a) and sink.wants(a)  # the loop, then the picture stage
    b = _result(2)
    assert not sink.wants(b)  # within 1 / stream_fps of the last: not drawn
    assert sink.wants(_result(3, ng=True))  # an NG frame always (its thumbnail)


def test_a_first_picture_without_viewers_and_nothing_after() -> None:
    view = SimpleNamespace(viewers=0, _page_seen=0.0, stream_fps=5.0)
    sink = HttpPictureSink(view)
    first = _result(1, judged=False)  # e.g. a recipe with no model yet: never NG, yet the page needs a picture
    assert sink.wants(first) and sink.wants(first)
    time.sleep(0.25)
    assert not sink.wants(_result(2, judged=False))
