"""Evaluation of a checkpoint on an MVTec-layout test split: metrics, JSON, Markdown and figures."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import ensure_dir, write_json, write_text
from edge_stpm.common.images import GOOD, fit_image, labelled_test_images, load_images, read_image, read_mask
from edge_stpm.common.progress import bar
from edge_stpm.contract import tiles
from edge_stpm.contract.scale import ScoreScale
from edge_stpm.runtime.learn import thresholds
from edge_stpm.runtime.learn.synthetic import proxy_auroc
from edge_stpm.runtime.overlay import NEAR, draw_contours, inspection_overlay
from edge_stpm.training import checkpoint, figures, metrics, segmetrics
from edge_stpm.training.devices import pick_device, set_threads

ScoreFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def score_set(infer: ScoreFn, images: np.ndarray, batch_size: int, quiet: bool = False,
              label: str = "score") -> tuple[np.ndarray, np.ndarray]:
    """Apply ``infer`` (uint8 ``(B,H,W,3)`` → maps ``(B,H,W)``, scores ``(B,)``) over a set in batches."""
    maps, scores = [], []
    with bar(quiet) as progress:
        task = progress.add_task(label, total=len(images), info="")
        for i in range(0, len(images), batch_size):
            m, s = infer(images[i : i + batch_size])
            maps.append(np.asarray(m, np.float32).reshape(-1, *images.shape[1:3]))
            scores.append(np.asarray(s, np.float32).reshape(-1))
            progress.advance(task, len(m))
    return np.concatenate(maps), np.concatenate(scores)


def torch_infer(pipe: torch.nn.Module, device: torch.device) -> ScoreFn:
    @torch.no_grad()
    def infer(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, s = pipe(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
        return m[:, 0].float().cpu().numpy(), s.float().cpu().numpy()

    return infer


AUPRO_LIMITS = {"aupro": 0.3, "aupro_005": 0.05}  # report key → FPR limit (0.05: MVTec AD 2's AU-PRO)
WIDEN_PX = segmetrics.PATCH_STRIDE_PX  # thin defects are also scored against the mask widened by one patch stride


def aupro_at(maps: np.ndarray, masks: np.ndarray, limits: dict[str, float] = AUPRO_LIMITS) -> dict[str, float | None]:
    """``metrics.aupro`` at each FPR limit (report key → limit), all from one PRO curve (one sort of the pixels);
    maps ``(N, H, W)`` float, masks ``(N, H, W)`` bool; None for every key when there is no defect region."""
    if not np.asarray(masks, bool).any():
        return {k: None for k in limits}
    fpr, pro = metrics.pro_curve(maps, masks)
    return {k: metrics.integrate_to(fpr, pro, lim) / lim for k, lim in limits.items()}


def compute_metrics(maps: np.ndarray, scores: np.ndarray, labels: np.ndarray, masks: np.ndarray,
                    defects: np.ndarray, pixel_threshold: float | None = None) -> dict[str, Any]:
    """Overall and per-defect image AUROC, pixel AUROC, AUPRO@0.3 (``aupro``) and @0.05 (``aupro_005``); with a
    ``pixel_threshold`` (map units) also SegF1 there (``segf1``, ``segmetrics.seg_f1``)."""
    def block(sel: np.ndarray) -> dict[str, Any]:
        b: dict[str, Any] = {"n": int(sel.sum()), "image_auroc": metrics.image_auroc(scores[sel], labels[sel]),
                             "pixel_auroc": metrics.pixel_auroc(maps[sel], masks[sel]),
                             **aupro_at(maps[sel], masks[sel])}
        if pixel_threshold is not None:
            b["segf1"] = segmetrics.seg_f1(maps[sel], masks[sel], pixel_threshold)
        return b

    out = {"overall": block(np.ones(len(scores), bool)), "per_defect": {}}
    good = defects == GOOD
    for d in sorted(set(defects.tolist()) - {GOOD}):
        out["per_defect"][d] = block(good | (defects == d))
    return out


def where_metrics(maps: np.ndarray, masks: np.ndarray, defects: np.ndarray, pixel_threshold: float,
                  scale: ScoreScale | None = None) -> dict[str, Any]:
    """Where the defect is, at the stored pixel threshold (map units): per defect type the median predicted region
    / true area and IoU (``segmetrics.region_medians``: components touching the defect; the same widened by
    ``WIDEN_PX`` for thin defects; and every predicted pixel), and on the good images the share of pixels the
    overlay colours at 0.5 / 0.8 / 1.0 on the model's score scale (``scale``; None: the old one) (median, p90)."""
    zero = 0.0 if scale is None else scale.pixel_zero
    bad = defects != GOOD
    m, k, d = maps[bad], masks[bad], defects[bad]
    variants = {"touching": ("touching", 0), f"touching_widened_{WIDEN_PX}px": ("touching", WIDEN_PX),
                "all_pixels": ("all", 0)}
    return {"pixel_threshold": float(pixel_threshold), "widen_px": WIDEN_PX, "pixel_zero": zero,
            "score_scale": "threshold" if scale is None else scale.kind,
            "regions": {name: segmetrics.region_medians(m, k, d, pixel_threshold, rule, w)
                        for name, (rule, w) in variants.items()},
            "good_coloured": segmetrics.coloured_summary(maps[~bad], pixel_threshold, zero=zero)}


def evaluate(ckpt: Path, data: Path, out: Path, device: str = "auto", batch_size: int = 16, quiet: bool = False,
             infer: ScoreFn | None = None, label: str = "pytorch fp32", threads: int | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint (or any ``infer`` function using its settings) and write the report folder."""
    out = ensure_dir(Path(out))
    pipe, meta = checkpoint.load_pipeline(Path(ckpt))
    items = labelled_test_images(Path(data))
    size, fit = meta["image_size"], meta["fit"]
    t0 = time.perf_counter()
    labels = np.array([it.label for it in items])
    defects = np.array([it.defect for it in items])
    if infer is None:
        dev = pick_device(device)
        if dev.type == "cpu":
            set_threads(threads)
        infer = torch_infer(pipe.to(dev), dev)
    test = test_inputs(items, meta, quiet)
    maps, scores = frame_results(test, meta, *score_set(infer, test["inputs"], batch_size, quiet))
    images, masks = test["images"], test["masks"]
    infer_s = time.perf_counter() - t0
    thr = meta["thresholds"]
    sc = ScoreScale.of(thr)
    res = compute_metrics(maps, scores, labels, masks, defects, thr["pixel"])
    res["segmentation"] = where_metrics(maps, masks, defects, thr["pixel"], sc)
    res["score_scale"] = sc.describe()
    res["good_test_scores"] = _good_on_scale(scores[labels == 0], sc)
    res["at_stored_threshold"] = thresholds.precision_recall_f1(scores, labels, thr["image"])
    res["at_stored_threshold"]["normalised_threshold"] = 1.0
    try:
        res["f1_optimal_on_this_set"] = thresholds.f1_optimal(scores, labels)
        res["f1_optimal_on_this_set"]["normalised_threshold"] = sc.image(res["f1_optimal_on_this_set"]["threshold"])
    except UserError as exc:
        res["f1_optimal_on_this_set"] = {"unavailable": str(exc)}
    report = {"checkpoint": str(ckpt), "data": str(data), "graph": label, "backbone": meta["backbone"],
              "image_size": size, "fit": fit, "tiles": meta.get("tiles"), "head": meta.get("head", "stpm"),
              "n_images": len(items), "metrics_at": list(maps.shape[1:]),
              "seconds": infer_s, "thresholds": thr, **res, "no_defect_check": no_defect_check(meta, infer, batch_size)}
    write_json(out / "report.json", report)
    write_text(out / "report.md", markdown(report))
    _figures(out, images, maps, scores, labels, masks, defects, items, thr)
    return report


def test_inputs(items: list, meta: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """The test split decoded once: ``inputs`` for the model (the fitted images, or a tiled fit's tiles, frame by
    frame), ``images`` and ``masks`` at the resolution the metrics use — the model input for a whole-frame fit; for
    a tiled fit (``contract/tiles.py``) every frame stretched to ``size × max(rows, cols)``, the resolution its
    tiles see — and ``shapes``, the frames' sizes (tiled fit only)."""
    size, fit = meta["image_size"], meta["fit"]
    grid = tiles.from_meta(meta)
    if grid is None:
        with bar(quiet) as progress:
            task = progress.add_task("decode test images", total=len(items), info="")
            inputs = load_images([it.path for it in items], size, fit, on_done=lambda n: progress.advance(task, n))
        return {"inputs": inputs, "images": inputs, "masks": np.stack([read_mask(it, size, fit) for it in items]),
                "shapes": None}
    side = size * max(grid.rows, grid.cols)
    frames = [read_image(it.path) for it in items]  # decoded once: cut into tiles and stretched for the figures
    inputs = np.concatenate([grid.split(f, size, fit) for f in frames])
    return {"inputs": inputs, "images": np.stack([fit_image(f, side, "stretch") for f in frames]),
            "masks": np.stack([read_mask(it, side, "stretch") for it in items]),
            "shapes": [f.shape[:2] for f in frames]}


def frame_results(test: dict[str, Any], meta: dict[str, Any], maps: np.ndarray,
                  scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inputs' maps and scores → the frames' (``test_inputs``' resolution): unchanged for a whole-frame fit;
    a tiled fit's maps stitched on each frame and stretched like its image, its score the largest tile's."""
    grid = tiles.from_meta(meta)
    if grid is None:
        return maps, scores
    side, n = test["images"].shape[1], grid.count
    stitched = np.stack([cv2.resize(grid.stitch(maps[i * n : (i + 1) * n], shape, meta["fit"]), (side, side),
                                    interpolation=cv2.INTER_LINEAR) for i, shape in enumerate(test["shapes"])])
    return stitched, grid.frame_scores(scores)


def no_defect_check(meta: dict[str, Any], infer: ScoreFn, batch_size: int) -> dict[str, Any] | None:
    """The proxy AUROC on synthetic anomalies of the checkpoint's held-out good images (seeded as in training),
    beside the real figures; None when those images are not on this machine."""
    val = [Path(p) for p in meta.get("training", {}).get("val_images", []) if Path(p).is_file()]
    if not val:
        return None
    seed = int(meta.get("training", {}).get("config", {}).get("seed", 0))
    grid = tiles.from_meta(meta)
    return proxy_auroc(infer, load_images(val, meta["image_size"], meta["fit"], tiles=grid), seed=seed,
                       batch=batch_size) | {"tiles": grid is not None}


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _tiles_text(r: dict[str, Any]) -> str:
    t = r.get("tiles")
    return (f", {tiles.from_meta(r).describe()}; pixel metrics at {r['metrics_at'][0]}² over the stretched frame"
            if t else "")


def _segf1_text(b: dict[str, Any]) -> str:
    """SegF1 of a report block as ``F1 (P / R)``; n/a without a pixel threshold."""
    g = b.get("segf1")
    return "n/a" if g is None else f"{_f(g['f1'])} ({_f(g['precision'])} / {_f(g['recall'])})"


def _row(name: str, b: dict[str, Any]) -> str:
    return (f"| {name} | {b['n']} | {_f(b['image_auroc'])} | {_f(b['pixel_auroc'])} | {_f(b['aupro'])} | "
            f"{_f(b.get('aupro_005'))} | {_segf1_text(b)} |")


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}×"


def _good_on_scale(good: np.ndarray, sc: ScoreScale) -> dict[str, Any]:
    """The good test images' scores on the score scale: median, p90 and the share at or above 0.5 (what a review
    band of 0.5 would send to REVIEW or NG) and at or above 1 (false calls)."""
    u = np.array([sc.image(s) for s in np.asarray(good, np.float64)])
    if not len(u):
        return {"n": 0}
    return {"n": int(len(u)), "median": float(np.median(u)), "p90": float(np.percentile(u, 90)),
            "share_at_or_above_0.5": float(np.mean(u >= 0.5)), "share_at_or_above_1": float(np.mean(u >= 1.0))}


def where_lines(seg: dict[str, Any] | None) -> list[str]:
    """Markdown lines for ``where_metrics``' figures: per defect type the median region / true area and IoU
    (touching, widened, all pixels), then the good images' coloured share; [] when absent."""
    if not seg:
        return []
    reg, w = seg["regions"], seg["widen_px"]
    touch, wide, every = reg["touching"], reg[f"touching_widened_{w}px"], reg["all_pixels"]
    lines = ["", f"Where the defect is, at the stored pixel threshold {seg['pixel_threshold']:.4g} (medians over the "
             "defective images of each type; a missed defect counts 0; region = predicted components touching the "
             f"defect; widened = the true mask dilated by {w} px, one patch stride; all = every predicted pixel):", "",
             "| defect | n | missed | region / true area | IoU | widened: area | widened: IoU | all: area | all: IoU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for d, t in touch.items():
        lines.append(f"| {d} | {t['n']} | {t['missed']} | {_x(t['area_ratio_median'])} | {_f(t['iou_median'])} | "
                     f"{_x(wide[d]['area_ratio_median'])} | {_f(wide[d]['iou_median'])} | "
                     f"{_x(every[d]['area_ratio_median'])} | {_f(every[d]['iou_median'])} |")
    good = seg["good_coloured"]
    n = next(iter(good.values()))["n"] if good else 0
    lines += ["", f"Good test images ({n}), share of pixels the overlay colours (map ≥ u on the "
              f"{seg.get('score_scale', 'threshold')} score scale, 0 = typical good, 1 = pixel threshold; the overlay's "
              f"rule is u ≥ {NEAR:g}): "
              + "; ".join(f"u ≥ {k}: median {_pct(v['median'])}, p90 {_pct(v['p90'])}"
                          for k, v in good.items()) + "."]
    return lines


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def summary_lines(r: dict[str, Any]) -> list[str]:
    """Plain lines for a terminal: SegF1 and AU-PRO@0.05 overall, region / true area and IoU per defect type, the
    good images' coloured share at 0.5 × the pixel threshold (for ``edge-stpm evaluate``'s printout)."""
    o, seg = r["overall"], r.get("segmentation")
    lines = [f"AU-PRO@0.05 {_f(o.get('aupro_005'))}; SegF1 at the stored pixel threshold {_segf1_text(o)}"]
    if seg:
        lines += [f"  {d}: region / true area {_x(t['area_ratio_median'])}, IoU {_f(t['iou_median'])}, "
                  f"missed {t['missed']}/{t['n']}" for d, t in seg["regions"]["touching"].items()]
        g = seg["good_coloured"][f"{NEAR:g}"]
        lines.append(f"good images coloured (u ≥ {NEAR:g} on the {seg.get('score_scale', 'threshold')} score "
                     f"scale): median {_pct(g['median'])}, p90 {_pct(g['p90'])}")
    gs = r.get("good_test_scores") or {}
    if gs.get("n"):
        lines.append(f"good test images' scores on that scale: median {gs['median']:.2f}, p90 {gs['p90']:.2f}; "
                     f"≥ 0.5 (a review band of 0.5) {_pct(gs['share_at_or_above_0.5'])}, "
                     f"≥ 1 (false calls) {_pct(gs['share_at_or_above_1'])}")
    return lines


def markdown(r: dict[str, Any]) -> str:
    o = r["overall"]
    lines = [f"# edge-stpm evaluation: {Path(r['data']).name}", "",
             f"Checkpoint `{r['checkpoint']}` ({r['backbone']}, {r['image_size']}², fit {r['fit']}{_tiles_text(r)}), "
             f"graph {r['graph']}, "
             f"{r['n_images']} test images.", "",
             "| subset | n | image AUROC | pixel AUROC | AUPRO@0.3 | AU-PRO@0.05 | SegF1 (P / R) |",
             "|---|---|---|---|---|---|---|", _row("**all**", o)]
    lines += [_row(f"good + {d}", b) for d, b in r["per_defect"].items()]
    a = r["at_stored_threshold"]
    lines += ["", f"At the stored image threshold {a['threshold']:.4g} ({r['thresholds']['method']}, from good images "
              f"only): precision {a['precision']:.3f}, recall {a['recall']:.3f}, F1 {a['f1']:.3f} "
              f"(TP {a['tp']}, FP {a['fp']}, FN {a['fn']}, TN {a['tn']})."]
    f1 = r["f1_optimal_on_this_set"]
    if "threshold" in f1:
        lines.append(f"The F1-optimal threshold on this labelled set would be {f1['threshold']:.4g} "
                     f"({f1['normalised_threshold']:.2f}× the stored one): F1 {f1['f1']:.3f}. It is not applied.")
    p = r.get("no_defect_check")
    if p:
        lines += ["", f"No-defect check (synthetic anomalies on {p['images']} {'tiles of ' if p.get('tiles') else ''}"
                  "held-out good images, no labels): proxy "
                  f"image AUROC {p['mean']:.3f} — " + ", ".join(f"{k} {v['image_auroc']:.3f}" for k, v in p["kinds"].items())
                  + ". It needs no defect samples; how well it ranks models is measured in docs/results.md."]
    lines += where_lines(r.get("segmentation"))
    lines += ["", "Figures: `roc_image.png`, `roc_pixel.png`, `examples.png` (heatmap overlays, ground truth in green).", ""]
    return "\n".join(lines)


def _figures(out: Path, images: np.ndarray, maps: np.ndarray, scores: np.ndarray, labels: np.ndarray,
             masks: np.ndarray, defects: np.ndarray, items: list, thr: dict[str, Any]) -> None:
    good = defects == GOOD
    sc = ScoreScale.of(thr)
    img_curves, pix_curves, marks = {}, {}, {}
    for d in sorted(set(defects.tolist()) - {GOOD}):
        sel = good | (defects == d)
        fpr, tpr = metrics.roc(scores[sel], labels[sel])
        img_curves[d] = (fpr, tpr, metrics.image_auroc(scores[sel], labels[sel]))
        flagged = scores[sel] >= thr["image"]
        y = labels[sel].astype(bool)
        marks[d] = (float(flagged[~y].mean()) if (~y).any() else 0.0, float(flagged[y].mean()) if y.any() else 0.0)
        if masks[sel].any():
            sub = np.random.default_rng(0).choice(int(sel.sum()) * maps.shape[1] * maps.shape[2],
                                                  min(400_000, int(sel.sum()) * maps.shape[1] * maps.shape[2]), replace=False)
            fpr, tpr = metrics.roc(maps[sel].ravel()[sub], masks[sel].ravel()[sub])
            pix_curves[d] = (fpr, tpr, metrics.pixel_auroc(maps[sel], masks[sel]))
    figures.roc_curves(img_curves, "image ROC, good vs each defect", out / "roc_image.png", marks)
    if pix_curves:
        figures.roc_curves(pix_curves, "pixel ROC (400k-pixel sample drawn)", out / "roc_pixel.png")
    tiles, caps = [], []
    rng = np.random.default_rng(0)
    for d in sorted(set(defects.tolist())):
        idx = np.flatnonzero(defects == d)
        for i in rng.choice(idx, min(3, len(idx)), replace=False):
            tile = inspection_overlay(images[i], maps[i], thr["pixel"], bool(scores[i] >= thr["image"]),
                                      sc.image(scores[i]), thr["image"], zero=sc.pixel_zero)
            draw_contours(tile, masks[i], (0, 255, 0))
            caps.append(f"{d} {items[i].path.name}\n{'NG' if scores[i] >= thr['image'] else 'OK'} "
                        f"{sc.image(scores[i]):.2f}")
            tiles.append(tile)
    figures.image_grid(tiles, caps, out / "examples.png")
