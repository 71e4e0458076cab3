"""Round 4 (benchmarks/results/accuracy/RULE_R4.md, "Minimum defect area"; reported, not a default): what a
recipe's ``min_defect_area`` does to the verdicts of one trained model on the magnetic-tile test split.

The station's rule (``runtime/station/recipes.py``, ``LoadedRecipe.apply``): a part is NG when its image score is at
or above the image threshold **and** the largest 8-connected region of its map at or above the pixel threshold
covers at least ``min_defect_area`` **frame** pixels — the map of the inspected region, i.e. the model's map brought
back to the frame's size (``common.images.unfit_map``, bilinear). This script counts the same regions with the
station's own ``recipes.largest_region`` twice per image, once on the model's map (S × S model-input pixels) and once
on that map at the frame's size (the station's rule), saves every image's two largest areas, and tabulates for each
minimum area: the share of good test images judged NG (false calls), recall on the defective images (overall and
per defect type) and precision, at the stored image and pixel thresholds. The frame-pixel verdicts are checked
against ``LoadedRecipe.apply`` itself for every image and area.

    nice -n 19 python3 benchmarks/r4/min_area.py --checkpoint /tmp/r4/baseline_seed0/run/model.pt --seed 0

Writes benchmarks/results/r4/min_area_seedSEED.json (options, thresholds, per-image areas, the table, wall seconds,
machine load) and .md (the table); the maps and scores are cached in ``--cache`` so a rerun does not infer again.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
AREAS = (0, 1, 16, 64, 256, 1024)  # 1: any region at all (the pixel threshold reached)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=Path("/tmp/r4/baseline_seed0/run/model.pt"))
    p.add_argument("--seed", type=int, default=0, help="the checkpoint's seed (file name only)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    p.add_argument("--keep", type=Path, default=ROOT / "benchmarks" / "results" / "r4", help="where results go")
    p.add_argument("--cache", type=Path, default=None, help="maps and scores (.npz; default /tmp/r4/min_area_seedSEED.npz)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference (default: all)")
    p.add_argument("--areas", type=int, nargs="+", default=list(AREAS), help="minimum areas to tabulate (pixels)")
    a = p.parse_args(argv)
    a.cache = a.cache or Path(f"/tmp/r4/min_area_seed{a.seed}.npz")
    return a


def machine() -> dict[str, Any]:
    """The load this run shared the CPU with: 1/5/15-minute load averages, cores, this process's niceness."""
    return {"loadavg": list(os.getloadavg()), "cores": os.cpu_count(), "nice": os.nice(0)}


def infer_maps(a: argparse.Namespace, items: list, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """The test images' maps ``(N, S, S)`` (map units) and image scores ``(N,)`` from the FP32 torch pipeline, as
    ``training.evaluate`` computes them (cached in ``a.cache``); and the wall seconds inference took (when cached:
    the seconds it took when the cache was made)."""
    if a.cache.is_file():
        z = np.load(a.cache)
        if list(z["paths"]) == [str(it.path) for it in items] and "infer_s" in z:
            return z["maps"], z["scores"], float(z["infer_s"])
    import torch

    from edge_stpm.common.images import load_images
    from edge_stpm.training import checkpoint
    from edge_stpm.training.devices import set_threads
    from edge_stpm.training.evaluate import score_set, torch_infer

    t0 = time.perf_counter()
    set_threads(a.threads)
    pipe, _ = checkpoint.load_pipeline(a.checkpoint)
    inputs = load_images([it.path for it in items], meta["image_size"], meta["fit"])
    maps, scores = score_set(torch_infer(pipe, torch.device("cpu")), inputs, 16, quiet=True)
    infer_s = time.perf_counter() - t0
    a.cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.cache.with_suffix(".part.npz")
    np.savez(tmp, maps=maps, scores=scores, paths=np.array([str(it.path) for it in items]), infer_s=infer_s,
             machine=np.array(os.getloadavg()))
    os.replace(tmp, a.cache)
    return maps, scores, infer_s


def largest_areas(maps: np.ndarray, shapes: list[tuple[int, int]], fit: str,
                  pixel_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image the largest 8-connected region at or above ``pixel_thr`` (map units), in model-input pixels (the
    S × S map) and in frame pixels (the map at the frame's size, the station's rule) — ``recipes.largest_region``."""
    from edge_stpm.common.images import unfit_map
    from edge_stpm.runtime.station.recipes import largest_region

    model = np.array([largest_region(m, pixel_thr, None) for m in maps])
    frame = np.array([largest_region(unfit_map(m, s, fit), pixel_thr, None) for m, s in zip(maps, shapes)])
    return model, frame


def station_check(maps: np.ndarray, scores: np.ndarray, shapes: list[tuple[int, int]], meta: dict[str, Any],
                  frame_areas: np.ndarray, areas: list[int]) -> int:
    """How many (image, area) verdicts of ``LoadedRecipe.apply`` (a recipe with that ``min_defect_area``, no ROI or
    ignore mask) differ from ``score ≥ image threshold and frame area ≥ area`` — 0 when this script's rule is the
    station's."""
    from edge_stpm.runtime.inspector import InspectionResult
    from edge_stpm.runtime.station.config import Recipe
    from edge_stpm.runtime.station.recipes import LoadedRecipe

    thr = meta["thresholds"]
    recipes = [LoadedRecipe(Recipe(name="r", index=0, model="unused", min_defect_area=m), None, "", 0.0)  # type: ignore[arg-type]
               for m in areas]
    wrong = 0
    for amap, s, shape, fa in zip(maps, scores, shapes, frame_areas):
        ng = float(s) / thr["image"] >= 1.0
        r = InspectionResult(float(s), float(s) / thr["image"], ng, amap, shape, meta["fit"], thr["pixel"], thr["image"])
        for rec in recipes:
            want = ng and (rec.cfg.min_defect_area == 0 or fa >= rec.cfg.min_defect_area)
            wrong += rec.apply(r, shape, 0.0).ng != want
    return wrong


def verdicts(ng: np.ndarray, labels: np.ndarray, defects: np.ndarray) -> dict[str, Any]:
    """False-call share on good images, recall overall and per defect type, precision (NG = ``ng``)."""
    y = labels.astype(bool)
    tp, fp = int((ng & y).sum()), int((ng & ~y).sum())
    out: dict[str, Any] = {"false_calls": fp, "good": int((~y).sum()), "false_call_share": fp / max(1, int((~y).sum())),
                           "tp": tp, "defective": int(y.sum()), "recall": tp / max(1, int(y.sum())),
                           "precision": tp / (tp + fp) if tp + fp else None, "recall_by_type": {}}
    for d in sorted(set(defects[y])):
        sel = defects == d
        out["recall_by_type"][d] = {"n": int(sel.sum()), "ng": int(ng[sel].sum()), "recall": float(ng[sel].mean())}
    return out


def same_false_calls(scores: np.ndarray, labels: np.ndarray, image_thr: float, false_calls: int) -> dict[str, float]:
    """The alternative to a minimum area: the lowest image threshold (raw score units, never below ``image_thr``)
    with at most ``false_calls`` good images at or above it, as a multiple of the stored one, and the recall there."""
    good = np.sort(scores[labels == 0])[::-1]
    t = image_thr if false_calls >= int((good >= image_thr).sum()) else float(np.nextafter(good[false_calls], np.inf))
    return {"threshold_scale": t / image_thr, "recall": float((scores[labels == 1] >= t).mean())}


def table(a: argparse.Namespace, scores: np.ndarray, labels: np.ndarray, defects: np.ndarray,
          model_areas: np.ndarray, frame_areas: np.ndarray, image_thr: float) -> dict[str, Any]:
    """``verdicts`` for every minimum area, counted in model-input pixels and in frame pixels, each beside the
    recall a raised image threshold keeps at the same false calls (``same_false_calls``)."""
    ng0 = scores >= image_thr
    out: dict[str, Any] = {}
    for unit, ar in (("model_px", model_areas), ("frame_px", frame_areas)):
        out[unit] = {str(m): verdicts(ng0 & (ar >= m), labels, defects) for m in a.areas}
        for v in out[unit].values():
            v["image_threshold_instead"] = same_false_calls(scores, labels, image_thr, v["false_calls"])
    return out


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def markdown(rec: dict[str, Any]) -> str:
    """The results as a markdown table: one row per unit and minimum area."""
    res = rec["results"]
    types = sorted(res["frame_px"]["0"]["recall_by_type"])
    head = (["counted in", "min area px", "good judged NG", "recall (all)"] + types
            + ["precision", "instead: image threshold × (recall) at the same false calls"])
    t = rec["thresholds"]
    lines = [f"# Minimum defect area, magnetic tile, seed {rec['seed']}", "",
             (f"Checkpoint `{rec['checkpoint']}` ({rec['image_size']}², fit {rec['fit']}), {len(rec['images'])} test "
             f"images, stored thresholds: image {t['image']:.4g}, pixel {t['pixel']:.4g} (raw map units). NG = image "
             f"score ≥ image threshold and, for a minimum area > 0, the largest 8-connected region of the map ≥ "
             f"pixel threshold ≥ the area. The station counts frame pixels (the map brought back to the frame's size); "
             f"the model-input rows count the same regions on the {rec['image_size']}² map. Frame-pixel verdicts "
             f"differing from `LoadedRecipe.apply`: {rec['station_rule_mismatches']}. Last column: the image "
             f"threshold (× the stored one) that gives the same false calls without a minimum area, and its recall."),
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for unit, name in (("model_px", f"model input ({rec['image_size']}²)"), ("frame_px", "frame (station rule)")):
        for m, v in res[unit].items():
            cells = [name, m, f"{v['false_calls']}/{v['good']} ({_pct(v['false_call_share'])})",
                     f"{v['tp']}/{v['defective']} ({_pct(v['recall'])})"]
            alt = v["image_threshold_instead"]
            cells += [_pct(v["recall_by_type"][d]["recall"]) for d in types] + [_pct(v["precision"])]
            cells.append(f"{alt['threshold_scale']:.3f}× ({_pct(alt['recall'])})")
            lines.append("| " + " | ".join(cells) + " |")
    q = rec["area_quantiles"]
    lines += ["", ("Largest region of the images judged NG by the image score alone (frame px; p10 / median / p90): "
              f"good {q['good_ng']}, defective {q['defective_ng']}; judged NG with no pixel at the pixel threshold "
              f"(largest region 0): good {q['good_ng_no_region']}, defective {q['defective_ng_no_region']}."),
              "", (f"Inference (FP32 torch, CPU) {rec['infer_wall_s']:.0f} s wall; areas and tables "
              f"{rec['wall_s'] - rec['infer_wall_s']:.0f} s; load average when done {rec['machine']['loadavg'][0]:.1f} "
              f"on {rec['machine']['cores']} cores (shared; not a speed figure).")]
    return "\n".join(lines)


def quantiles(v: np.ndarray) -> str:
    return "–" if not len(v) else " / ".join(f"{x:.0f}" for x in np.percentile(v, [10, 50, 90]))


def main(argv: list[str]) -> int:
    from edge_stpm.common.files import ensure_dir, write_json, write_text
    from edge_stpm.common.images import labelled_test_images, read_image
    from edge_stpm.training import checkpoint

    a = parse(argv)
    t0 = time.perf_counter()
    meta = checkpoint.meta(checkpoint.read(a.checkpoint))
    items = labelled_test_images(a.data)
    labels = np.array([it.label for it in items])
    defects = np.array([it.defect for it in items])
    fresh = not a.cache.is_file()
    maps, scores, infer_s = infer_maps(a, items, meta)
    shapes = [read_image(it.path).shape[:2] for it in items]
    thr = meta["thresholds"]
    model_areas, frame_areas = largest_areas(maps, shapes, meta["fit"], thr["pixel"])
    mismatches = station_check(maps, scores, shapes, meta, frame_areas, [m for m in a.areas if m > 0])
    ng0 = scores >= thr["image"]
    rec: dict[str, Any] = {
        "checkpoint": str(a.checkpoint), "seed": a.seed, "data": str(a.data), "image_size": meta["image_size"],
        "fit": meta["fit"], "thresholds": thr, "areas": a.areas, "connectivity": 8,
        "station_rule_mismatches": mismatches,
        "results": table(a, scores, labels, defects, model_areas, frame_areas, thr["image"]),
        "area_quantiles": {"good_ng": quantiles(frame_areas[ng0 & (labels == 0)]),
                           "defective_ng": quantiles(frame_areas[ng0 & (labels == 1)]),
                           "good_ng_no_region": int((ng0 & (labels == 0) & (frame_areas == 0)).sum()),
                           "defective_ng_no_region": int((ng0 & (labels == 1) & (frame_areas == 0)).sum())},
        "images": [{"path": str(it.path.relative_to(a.data)), "defect": it.defect, "label": int(it.label),
                    "score": float(s), "frame_hw": list(sh), "largest_model_px": int(ma), "largest_frame_px": int(fa)}
                   for it, s, sh, ma, fa in zip(items, scores, shapes, model_areas, frame_areas)],
        "infer_wall_s": infer_s, "inferred_now": fresh, "wall_s": time.perf_counter() - t0 + (0 if fresh else infer_s),
        "machine": machine()}
    keep = ensure_dir(a.keep)
    write_json(keep / f"min_area_seed{a.seed}.json", rec)
    write_text(keep / f"min_area_seed{a.seed}.md", markdown(rec) + "\n")
    print(markdown(rec))
    print(f"station rule mismatches: {mismatches}; inference {infer_s:.0f} s, total {rec['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
