"""Round 4 addendum 7 (benchmarks/results/accuracy/RULE_R4.md): outlines drawn at a share β of each region's peak.

On I1p's maps (stride-8 features with the σ 1 input blur, cached by ``stride4.py``; banks by the product's numpy
coreset; p999 pixel threshold; ``fit.split``'s held-out sets): the region of a map is the components of map ≥ t, each
cut at max(t, z + β·(peak − z)) (z: the score scale's pixel zero). ``--choose`` scores β 0 / 0.25 / 0.5 / 0.75 on
seed 0's synthetic anomalies of the held-out good images (no test labels) and picks one; ``--seed N`` measures every β
on the test split; ``--table`` prints the table and the rule's judgement.

    nice -n 19 python3 benchmarks/r4/peak_regions.py --choose
    nice -n 19 python3 benchmarks/r4/peak_regions.py --seed 0 ; ... --seed 1 ; ... --seed 2
    python3 benchmarks/r4/peak_regions.py --table
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "r4"))

import bank_cost as bc  # noqa: E402
import input_blur as ib  # noqa: E402
import stride4 as s4  # noqa: E402

from edge_stpm.common.files import write_json, write_text  # noqa: E402
from edge_stpm.runtime.learn import thresholds  # noqa: E402
from edge_stpm.runtime.learn.coreset import select  # noqa: E402
from edge_stpm.runtime.learn.synthetic import KINDS, make  # noqa: E402
from edge_stpm.training import metrics, segmetrics  # noqa: E402

BETAS = (0.0, 0.25, 0.5, 0.75)
KEEP = ROOT / "benchmarks" / "results" / "r4"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    p.add_argument("--cache", type=Path, default=Path("/tmp/r4I"))
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--choose", action="store_true")
    p.add_argument("--table", action="store_true")
    return p.parse_args(argv)


def cut(amap: np.ndarray, t: float, zero: float, beta: float) -> np.ndarray:
    """R(β) of one map ``(H, W)``: the components of map ≥ t, each keeping its pixels ≥ max(t, z + β·(peak − z))."""
    above = amap >= np.float32(t)
    if beta <= 0 or not above.any():
        return above
    n, lab = cv2.connectedComponents(above.astype(np.uint8), connectivity=8)
    peak = np.full(n, -np.inf, np.float32)
    np.maximum.at(peak, lab[above], amap[above])
    level = np.maximum(np.float32(t), np.float32(zero) + np.float32(beta) * (peak - np.float32(zero)))
    return above & (amap >= level[lab])


def regions(maps: np.ndarray, t: float, zero: float, beta: float) -> np.ndarray:
    return np.stack([cut(m, t, zero, beta) for m in maps]).astype(np.float32)


def figures(pred: np.ndarray, masks: np.ndarray, defects: np.ndarray) -> dict[str, Any]:
    """SegF1 and the per-type region medians of binary predictions (scored at 0.5: predicted = 1)."""
    bad = np.array([m.any() for m in masks])
    return {"segf1": segmetrics.seg_f1(pred, masks, 0.5),
            "regions": segmetrics.region_medians(pred[bad], masks[bad], defects[bad], 0.5)}


def setup(a: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Seed ``seed``'s I1p bank, maps and thresholds (the held-out and test maps)."""
    d = ib.data(a)
    feat = ib.Features(s4.SIGMA_IN)
    train = s4.cached(a.cache / "s8_train.npy", lambda: feat(d["train_img"]))
    test = s4.cached(a.cache / "s8_test.npy", lambda: feat(d["test_img"]))
    val = s4.held_out(seed, len(train))
    bank_file = a.cache / f"bank_I1p_seed{seed}.npy"
    if bank_file.exists():
        bank = np.load(bank_file)
    else:
        train_p = np.ascontiguousarray(train[~val]).reshape(-1, train.shape[2])
        bank = train_p[select(train_p, s4.i1p_entries(seed), seed, 0, None)]
        np.save(bank_file, bank)
    sq = (bank * bank).sum(1)
    smooth = bc.Smooth(bc.SIGMA, bc.SIZE)
    vmaps, vscores = bc.maps_scores(bc.nearest(np.asarray(train[val]), bank, sq)[0], smooth)
    tmaps, tscores = bc.maps_scores(bc.nearest(np.asarray(test), bank, sq)[0], smooth)
    cal = thresholds.calibrate(vscores, vmaps, "logsigma", thresholds.default_k("memory"), pixel_method="p999")
    return {"d": d, "feat": feat, "val": val, "bank": bank, "sq": sq, "smooth": smooth, "cal": cal,
            "tmaps": tmaps, "tscores": tscores}


def choose(a: argparse.Namespace) -> dict[str, Any]:
    s = setup(a, 0)
    t, z = s["cal"]["pixel"], s["cal"]["score_scale"]["pixel_zero"]
    val_img = s["d"]["train_img"][s["val"]]
    per: dict[str, dict[str, Any]] = {f"{b:g}": {} for b in BETAS}
    for kind in KINDS:
        bad, masks = make(val_img, kind, 0)
        maps, _ = bc.maps_scores(bc.nearest(s["feat"](bad), s["bank"], s["sq"])[0], s["smooth"])
        for b in BETAS:
            r = segmetrics.region_medians(regions(maps, t, z, b), masks.astype(bool), np.array([kind] * len(bad)), 0.5)
            per[f"{b:g}"][kind] = r[kind]
    scores = {b: float(np.mean([per[b][k]["iou_median"] for k in KINDS])) for b in per}
    best = BETAS[0]
    for b in BETAS[1:]:
        if scores[f"{b:g}"] > scores[f"{best:g}"] + 0.01:
            best = b
    rec = {"seed": 0, "kinds": list(KINDS), "thresholds": {"pixel": t, "pixel_zero": z}, "per_kind": per,
           "score": scores, "chosen": best}
    write_json(KEEP / "R_choice_seed0.json", rec)
    print("choice:", {b: round(v, 4) for b, v in scores.items()}, "→ β", best, flush=True)
    return rec


def measure(a: argparse.Namespace, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    s = setup(a, seed)
    d, cal, tmaps = s["d"], s["cal"], s["tmaps"]
    t, z = cal["pixel"], cal["score_scale"]["pixel_zero"]
    masks, defects, labels = d["masks"], d["defects"], d["labels"]
    rec: dict[str, Any] = {"seed": seed, "thresholds": {"image": cal["image"], "pixel": t, "pixel_zero": z},
                           "image_auroc": metrics.image_auroc(s["tscores"], labels), "betas": {}}
    for b in BETAS:
        rec["betas"][f"{b:g}"] = figures(regions(tmaps, t, z, b), masks, defects)
    rec["seconds"] = time.perf_counter() - t0
    write_json(KEEP / f"R_seed{seed}.json", rec)
    f0 = rec["betas"]["0"]["segf1"]["f1"]
    print(f"seed {seed}: AUROC {rec['image_auroc']:.4f}; SegF1 by β: "
          + ", ".join(f"{b} {v['segf1']['f1']:.3f}" for b, v in rec["betas"].items()) + f" (β 0: {f0:.3f})", flush=True)
    return rec


def table() -> str:
    choice = json.loads((KEEP / "R_choice_seed0.json").read_text())
    recs = [json.loads(p.read_text()) for p in sorted(KEEP.glob("R_seed*.json"))]
    out = ["**Label-free choice** (seed 0, synthetic anomalies of the held-out good images, mean over the kinds of the "
           "median region IoU): " + ", ".join(f"β {b} {v:.4f}" for b, v in choice["score"].items())
           + f" → **β {choice['chosen']:g}**", "",
           "| β | seed | SegF1 (P / R) | missed: " + " / ".join(bc.DEFECTS) + " | region / true area: "
           + " / ".join(bc.DEFECTS) + " | IoU: " + " / ".join(bc.DEFECTS) + " |", "|---|---|---|---|---|---|"]
    for b in (f"{x:g}" for x in BETAS):
        for r in recs:
            f = r["betas"][b]
            s, g = f["segf1"], f["regions"]
            out.append(f"| {b} | {r['seed']} | {s['f1']:.3f} ({s['precision']:.3f} / {s['recall']:.3f}) | "
                       + " / ".join(str(g[x]["missed"]) for x in bc.DEFECTS) + " | "
                       + " / ".join(f"{g[x]['area_ratio_median']:.2f}" for x in bc.DEFECTS) + " | "
                       + " / ".join(f"{g[x]['iou_median']:.2f}" for x in bc.DEFECTS) + " |")
    return "\n".join(out) + "\n\n" + judge(recs, f"{choice['chosen']:g}") + "\n"


def judge(recs: list[dict[str, Any]], b: str) -> str:
    if b == "0":
        return "- β 0 chosen: nothing changes."
    if len(recs) < 3:
        return f"- seeds measured: {[r['seed'] for r in recs]} (the judgement needs 3)"

    def mean(beta: str, get) -> float:
        return float(np.mean([get(r["betas"][beta]) for r in recs]))

    f0, f1 = mean("0", lambda f: f["segf1"]["f1"]), mean(b, lambda f: f["segf1"]["f1"])
    iou = {x: (mean("0", lambda f: f["regions"][x]["iou_median"]), mean(b, lambda f: f["regions"][x]["iou_median"]))
           for x in bc.DEFECTS}
    i0, i1 = float(np.mean([v[0] for v in iou.values()])), float(np.mean([v[1] for v in iou.values()]))
    worst = min(v[1] - v[0] for v in iou.values())
    more_missed = [r["seed"] for r in recs if sum(r["betas"][b]["regions"][x]["missed"] for x in bc.DEFECTS)
                   > sum(r["betas"]["0"]["regions"][x]["missed"] for x in bc.DEFECTS)]

    def in_band(beta: str) -> int:
        return sum(1 / 3 <= mean(beta, lambda f, x=x: f["regions"][x]["area_ratio_median"]) <= 3 for x in bc.DEFECTS)

    checks = [(f"SegF1 {f0:.3f} → {f1:.3f} (not lower by more than 0.01)", f1 >= f0 - 0.01),
              (f"mean per-type IoU {i0:.3f} → {i1:.3f} (≥ +0.02)", i1 >= i0 + 0.02),
              (f"worst type's IoU change {worst:+.3f} (≥ −0.02)", worst >= -0.02),
              (f"seeds with more missed defects: {more_missed} (none)", not more_missed),
              (f"types with region / true area in [⅓, 3]: {in_band('0')} → {in_band(b)} (not fewer)",
               in_band(b) >= in_band("0"))]
    lines = [f"- {text}: {'pass' if ok else 'FAIL'}" for text, ok in checks]
    verdict = all(ok for _, ok in checks)
    return "\n".join(lines) + f"\n- **β {b} {'passes: it becomes the default' if verdict else 'does not pass'}**"


def main(argv: list[str]) -> int:
    a = parse(argv)
    if a.table:
        text = table()
        write_text(KEEP / "R_table.md", text)
        print(text)
        return 0
    if a.choose:
        choose(a)
    if a.seed is not None:
        measure(a, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
