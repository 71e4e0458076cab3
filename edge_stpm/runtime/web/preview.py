"""What a recipe change would do before it is applied: the last N saved frames of the recipe re-scored with its
current settings and with the proposed ones (threshold, minimum defect area), on the box's own model; and applying
the change between two frames (audited), as a reload of the station file would."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2

from edge_stpm.common.errors import UserError
from edge_stpm.contract.options import RANGES
from edge_stpm.runtime.inspector import Inspector
from edge_stpm.runtime.loop.sinks.record import connect
from edge_stpm.runtime.station.control import SETTING_KEYS, _live
from edge_stpm.runtime.station.recipes import LoadedRecipe

PREVIEW_MAX = 500


def _proposed(control: Any, body: dict[str, Any]) -> tuple[Any, Any]:
    """(the recipe as loaded, its settings with the proposed changes) — each value checked against its range."""
    rec = control.recipes.by_name(str(body.get("recipe", "")))
    if rec is None:
        raise UserError(f"no recipe named {body.get('recipe')!r}")
    upd: dict[str, Any] = {}
    if body.get("threshold") is not None:
        t = float(body["threshold"])
        lo, hi = RANGES["threshold"]
        if not lo <= t <= hi:
            raise UserError(f"threshold must be in {lo:g}..{hi:g} (on the score scale)")
        upd["threshold"] = t
    if body.get("min_defect_area") is not None:
        a = int(body["min_defect_area"])
        if not 0 <= a <= 100_000_000:
            raise UserError("min_defect_area must be 0..100000000 frame pixels")
        upd["min_defect_area"] = a
    if "review_band" in body:  # null turns the band off
        b = body["review_band"]
        if b is not None and not 0 < float(b) < 1:
            raise UserError("review_band must be above 0 and below 1 (on the score scale: 0 = a typical good part, 1 = "
                            "the threshold), or null for none")
        upd["review_band"] = None if b is None else float(b)
    cfg = rec.cfg.model_copy(update=upd)
    if "threshold" in upd:  # the web app's threshold is on the score scale, whatever the station file's version
        cfg._threshold_multiple = False
    return rec, cfg


def _variant(rec: Any, cfg: Any) -> Any:
    """The recipe with other settings, on the same loaded model (nothing is loaded)."""
    if not rec.has_model:
        raise UserError(f"recipe {rec.cfg.name} has no model yet: nothing to preview (fit its first one)")
    insp = Inspector(rec.inspector.backend, cfg.threshold, rec.inspector.frame_path, cfg.threshold_multiple)
    return LoadedRecipe(cfg.model_copy(update={"model": rec.cfg.model}), insp, rec.sha256, 0.0, version=rec.version)


def _frames(record: Path, recipe: str, n: int) -> list[tuple[str, str]]:
    con = connect(record, readonly=True)
    try:
        return con.execute("SELECT e.result_id, e.frame FROM evidence e JOIN inspections i ON i.result_id = "
                           "e.result_id WHERE i.recipe_name = ? ORDER BY e.time DESC LIMIT ?", (recipe, n)).fetchall()
    finally:
        con.close()


def preview(control: Any, record: Path | None, body: dict[str, Any]) -> dict[str, Any]:
    """Verdicts of the recipe's last ``n`` saved frames now and with the proposed settings; how many change."""

    if record is None:
        raise UserError("this run keeps no record: nothing saved to preview on")
    rec, cfg = _proposed(control, body)
    n = max(1, min(PREVIEW_MAX, int(body.get("n", 100))))
    rows = _frames(record, rec.cfg.name, n)
    if not rows:
        raise UserError(f"no saved frames of recipe {rec.cfg.name} yet")
    now, then = _variant(rec, rec.cfg), _variant(rec, cfg)
    items = []
    for rid, frame in rows:
        img = cv2.imread(frame, cv2.IMREAD_COLOR)
        if img is None:
            continue
        a = now.apply(now.inspector.inspect(now.crop(img)), img.shape[:2], _top(rec))
        b = then.apply(then.inspector.inspect(then.crop(img)), img.shape[:2], _top(rec))
        items.append({"result_id": rid, "now": a.verdict, "proposed": b.verdict,
                      "now_score": a.normalised_score, "proposed_score": b.normalised_score})
    changed = [i for i in items if i["now"] != i["proposed"]]
    return {"recipe": rec.cfg.name, "frames": len(items), "changed": len(changed),
            "ng_now": sum(i["now"] == "NG" for i in items), "ng_proposed": sum(i["proposed"] == "NG" for i in items),
            "review_now": sum(i["now"] == "REVIEW" for i in items),
            "review_proposed": sum(i["proposed"] == "REVIEW" for i in items),
            "proposed": {"threshold": cfg.threshold, "min_defect_area": cfg.min_defect_area,
                         "review_band": cfg.review_band}, "items": items}


def _top(rec: Any) -> float:
    return float(rec.inspector.backend.metadata.get("score_top_percent", 0.0) or 0.0)


def apply_settings(control: Any, body: dict[str, Any], who: str) -> dict[str, Any]:
    """The proposed settings made live between two frames; audited with before and after."""
    rec, cfg = _proposed(control, body)
    control.recipes.replace(_variant(rec, cfg), close_old=False)
    control.store.save_settings(rec.cfg.name, {k: getattr(cfg, k) for k in SETTING_KEYS} | {
        "threshold_multiple": cfg.threshold_multiple, "by": who, "time": time.time()})
    control.audit.write(who, "recipe settings", rec.cfg.name, _live(rec.cfg), _live(cfg))
    return {"recipe": rec.cfg.name, "before": _live(rec.cfg), "after": _live(cfg)}

