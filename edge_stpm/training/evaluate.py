"""Evaluation of a checkpoint on an MVTec-layout test split: metrics, JSON, Markdown and figures."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from edge_stpm.training import checkpoint, figures, metrics, thresholds
from edge_stpm.runtime.overlay import draw_contours, inspection_overlay
from edge_stpm.contract.errors import UserError
from edge_stpm.contract import tiles
from edge_stpm.contract.images import GOOD, fit_image, labelled_test_images, load_images, read_image, read_mask
from edge_stpm.contract.files import ensure_dir, write_json, write_text
from edge_stpm.contract.progress import bar
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


def compute_metrics(maps: np.ndarray, scores: np.ndarray, labels: np.ndarray, masks: np.ndarray,
                    defects: np.ndarray) -> dict[str, Any]:
    """Overall and per-defect image AUROC, pixel AUROC and AUPRO@0.3."""
    def block(sel: np.ndarray) -> dict[str, Any]:
        return {"n": int(sel.sum()), "image_auroc": metrics.image_auroc(scores[sel], labels[sel]),
                "pixel_auroc": metrics.pixel_auroc(maps[sel], masks[sel]), "aupro": metrics.aupro(maps[sel], masks[sel])}

    out = {"overall": block(np.ones(len(scores), bool)), "per_defect": {}}
    good = defects == GOOD
    for d in sorted(set(defects.tolist()) - {GOOD}):
        out["per_defect"][d] = block(good | (defects == d))
    return out


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
    res = compute_metrics(maps, scores, labels, masks, defects)
    thr = meta["thresholds"]
    res["at_stored_threshold"] = thresholds.precision_recall_f1(scores, labels, thr["image"])
    res["at_stored_threshold"]["normalised_threshold"] = 1.0
    try:
        res["f1_optimal_on_this_set"] = thresholds.f1_optimal(scores, labels)
        res["f1_optimal_on_this_set"]["normalised_threshold"] = res["f1_optimal_on_this_set"]["threshold"] / thr["image"]
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
    from edge_stpm.training.synthetic_defects import proxy_auroc

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


def markdown(r: dict[str, Any]) -> str:
    o = r["overall"]
    lines = [f"# edge-stpm evaluation: {Path(r['data']).name}", "",
             f"Checkpoint `{r['checkpoint']}` ({r['backbone']}, {r['image_size']}², fit {r['fit']}{_tiles_text(r)}), "
             f"graph {r['graph']}, "
             f"{r['n_images']} test images.", "",
             "| subset | n | image AUROC | pixel AUROC | AUPRO@0.3 |", "|---|---|---|---|---|",
             f"| **all** | {o['n']} | {_f(o['image_auroc'])} | {_f(o['pixel_auroc'])} | {_f(o['aupro'])} |"]
    for d, b in r["per_defect"].items():
        lines.append(f"| good + {d} | {b['n']} | {_f(b['image_auroc'])} | {_f(b['pixel_auroc'])} | {_f(b['aupro'])} |")
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
    lines += ["", "Figures: `roc_image.png`, `roc_pixel.png`, `examples.png` (heatmap overlays, ground truth in green).", ""]
    return "\n".join(lines)


def _figures(out: Path, images: np.ndarray, maps: np.ndarray, scores: np.ndarray, labels: np.ndarray,
             masks: np.ndarray, defects: np.ndarray, items: list, thr: dict[str, Any]) -> None:
    good = defects == GOOD
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
                                      float(scores[i] / thr["image"]), thr["image"])
            draw_contours(tile, masks[i], (0, 255, 0))
            caps.append(f"{d} {items[i].path.name}\n{'NG' if scores[i] >= thr['image'] else 'OK'} "
                        f"{scores[i] / thr['image']:.2f}")
            tiles.append(tile)
    figures.image_grid(tiles, caps, out / "examples.png")
