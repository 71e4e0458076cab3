"""Round 4 addendum (benchmarks/results/accuracy/RULE_R4.md): step B (bank size: PCA-64, coreset 0.5 %) and step W
(PatchCore's re-weighted image score) on magnetic tile, from one pass of the teacher pack's feature graph.

The memory head's scoring is reproduced in numpy on cached patch features: nearest-entry distance → bilinear to the
input size → the product's σ 4 Gaussian (zero padding, renormalised) → top-2 % image score; thresholds by
``thresholds.calibrate`` on the checkpoint's own held-out images; metrics by ``training/metrics.py`` and
``segmetrics.py``. "ckpt" (the checkpoint's own bank) checks the harness against step P's P0 (the rule's condition).

    nice -n 19 python3 benchmarks/r4/bank_cost.py --pack /tmp/learn/pack --seed 0 --checkpoint /tmp/r4/.../model.pt
    python3 benchmarks/r4/bank_cost.py --table benchmarks/results/r4/B_seed*.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_stpm.common.files import write_json, write_text  # noqa: E402
from edge_stpm.common.images import good_images, labelled_test_images, load_images, read_mask  # noqa: E402
from edge_stpm.runtime.learn import thresholds  # noqa: E402
from edge_stpm.runtime.learn.coreset import bank_entries, select  # noqa: E402
from edge_stpm.runtime.learn.fit import patches  # noqa: E402
from edge_stpm.runtime.learn.pack import read_pack  # noqa: E402
from edge_stpm.training import metrics, segmetrics  # noqa: E402

SIZE, GRID, SIGMA, TOP = 256, 32, 4.0, 0.02
P0 = {0: (0.9662, 0.322), 1: (0.9689, 0.326), 2: (0.9707, 0.326)}  # step P's P0 (image AUROC, SegF1), P_table.md
SUPPORT = 9  # PatchCore's b


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", type=Path, default=Path("/tmp/learn/pack"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    p.add_argument("--cache", type=Path, default=Path("/tmp/r4B"))
    p.add_argument("--keep", type=Path, default=ROOT / "benchmarks" / "results" / "r4")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table", nargs="+", type=Path, default=None)
    p.add_argument("--b1p", action="store_true", help="addendum 2: only B1 with the p999 pixel threshold")
    return p.parse_args(argv)


def features(a: argparse.Namespace) -> dict[str, Any]:
    """Patch features ``(n, 1024, 128)`` of every train/good and test image (cached in ``a.cache``)."""
    f = a.cache / "features.npz"
    if f.exists():
        z = np.load(f, allow_pickle=True)
        return {k: z[k] for k in z.files}
    pack = read_pack(a.pack)
    train_paths = good_images(a.data)
    items = labelled_test_images(a.data)
    train = patches(pack, load_images(train_paths, SIZE, "stretch"), a.threads).reshape(len(train_paths), -1, 128)
    test = patches(pack, load_images([i.path for i in items], SIZE, "stretch"), a.threads).reshape(len(items), -1, 128)
    masks = np.stack([read_mask(i, SIZE, "stretch") for i in items]).astype(bool)
    out = {"train": train, "test": test, "masks": masks, "labels": np.array([i.label for i in items]),
           "defects": np.array([i.defect for i in items]), "train_paths": np.array([str(p) for p in train_paths])}
    a.cache.mkdir(parents=True, exist_ok=True)
    np.savez(f, **out)
    return out


class Smooth:
    """The product's GaussianSmooth (training/model.py) in OpenCV: ±4σ kernel, zero padding, ÷ blur of ones."""

    def __init__(self, sigma: float, size: int) -> None:
        r = int(4.0 * sigma + 0.5)
        x = np.arange(-r, r + 1, dtype=np.float32)
        k = np.exp(-0.5 * (x / sigma) ** 2)
        self.k = (k / k.sum()).astype(np.float32)
        self.inv = 1.0 / self._blur(np.ones((size, size), np.float32))

    def _blur(self, m: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(m, cv2.CV_32F, self.k, self.k, borderType=cv2.BORDER_CONSTANT)

    def __call__(self, m: np.ndarray) -> np.ndarray:
        return self._blur(m) * self.inv


def nearest(q: np.ndarray, bank: np.ndarray, bank_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per patch of ``q`` ``(n, P, D)``: distance to the nearest bank row and its index."""
    d = np.empty(q.shape[:2], np.float32)
    idx = np.empty(q.shape[:2], np.int64)
    for i in range(len(q)):
        d2 = bank_sq[None, :] - 2.0 * (q[i] @ bank.T)
        j = d2.argmin(axis=1)
        d[i] = np.sqrt(np.maximum(d2[np.arange(len(j)), j] + (q[i] * q[i]).sum(1), 0.0))
        idx[i] = j
    return d, idx


def maps_scores(d: np.ndarray, smooth: Smooth) -> tuple[np.ndarray, np.ndarray]:
    k = math.ceil(TOP * SIZE * SIZE)
    maps = np.stack([smooth(cv2.resize(x.reshape(GRID, GRID), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR))
                     for x in d])
    flat = maps.reshape(len(maps), -1)
    top = np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:]
    return maps, top.mean(axis=1)


def reweight(q: np.ndarray, d: np.ndarray, idx: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """PatchCore's weight w (anomalib: 1 − softmax(distances to m* and its b nearest entries)[m*]) per image."""
    sq = (bank * bank).sum(1)
    w = np.empty(len(q))
    for i in range(len(q)):
        p = int(d[i].argmax())
        m = int(idx[i, p])
        dm = np.sqrt(np.maximum(sq - 2 * bank @ bank[m] + sq[m], 0))
        support = np.argsort(dm)[: SUPPORT + 1]  # m* itself first (distance 0), then its b nearest
        support = np.concatenate([[m], support[support != m][:SUPPORT]])
        dist = np.sqrt(np.maximum(((bank[support] - q[i, p]) ** 2).sum(1), 0))
        e = np.exp(dist - dist.max())
        w[i] = 1.0 - e[0] / e.sum()
    return w


def evaluate(maps: np.ndarray, scores: np.ndarray, cal: dict[str, Any], f: dict[str, Any]) -> dict[str, Any]:
    labels, masks, defects = f["labels"], f["masks"], f["defects"]
    it, pt = cal["image"], cal["pixel"]
    zi, zp = cal["score_scale"]["image_zero"], cal["score_scale"]["pixel_zero"]
    bad = labels == 1
    pred = scores >= it
    on_scale = (scores - zi) / (it - zi)
    regions = segmetrics.region_medians(maps[bad], masks[bad], defects[bad], pt)
    return {
        "image_auroc": metrics.image_auroc(scores, labels),
        "pixel_auroc": metrics.pixel_auroc(maps, masks),
        "segf1": segmetrics.seg_f1(maps, masks, pt),
        "recall": float(pred[bad].mean()), "precision": float(pred[bad].sum() / max(1, pred.sum())),
        "false_calls": float(pred[~bad].mean()), "review_share": float((on_scale[~bad] >= 0.5).mean()),
        "good_coloured": segmetrics.coloured_summary(maps[~bad], pt, zero=zp),
        "regions": regions,
        "per_defect_auroc": {d: metrics.image_auroc(scores[(defects == d) | ~bad], labels[(defects == d) | ~bad])
                             for d in sorted(set(defects[bad].tolist()))},
    }


def image_only(scores: np.ndarray, val_scores: np.ndarray, k: float, f: dict[str, Any]) -> dict[str, Any]:
    labels = f["labels"]
    it = thresholds.good_threshold(val_scores, "logsigma", None, k)
    pred, bad = scores >= it, labels == 1
    return {"image_auroc": metrics.image_auroc(scores, labels), "recall": float(pred[bad].mean()),
            "false_calls": float(pred[~bad].mean())}


def run_bank(name: str, bank: np.ndarray, proj: np.ndarray | None, val_q: np.ndarray, test_q: np.ndarray,
             f: dict[str, Any], smooth: Smooth, k: float, pixel_method: str | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    if proj is not None:
        val_q, test_q = val_q @ proj, test_q @ proj
    sq = (bank * bank).sum(1)
    vd, vidx = nearest(val_q, bank, sq)
    td, tidx = nearest(test_q, bank, sq)
    vmaps, vscores = maps_scores(vd, smooth)
    tmaps, tscores = maps_scores(td, smooth)
    cal = thresholds.calibrate(vscores, vmaps, "logsigma", k, pixel_method=pixel_method)
    out = {"name": name, "entries": int(bank.shape[0]), "dims": int(bank.shape[1]),
           "distance_macs": int(GRID * GRID * bank.shape[0] * bank.shape[1]),
           "thresholds": {kk: cal[kk] for kk in ("image", "pixel", "score_scale")},
           "W0": evaluate(tmaps, tscores, cal, f)}
    if name in ("ckpt", "B0"):
        vw, tw = reweight(val_q, vd, vidx, bank), reweight(test_q, td, tidx, bank)
        out["W1"] = image_only(tw * td.max(1), vw * vd.max(1), k, f)
        out["W2"] = image_only(tw * tscores, vw * vscores, k, f)
    out["seconds"] = time.perf_counter() - t0
    print(f"{name}: AUROC {out['W0']['image_auroc']:.4f} SegF1 {out['W0']['segf1']['f1']:.3f} "
          f"({out['seconds']:.0f} s)", flush=True)
    return out


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    mu = x.mean(0)
    c = (x - mu).T @ (x - mu) / len(x)
    w, v = np.linalg.eigh(c.astype(np.float64))
    return np.ascontiguousarray(v[:, ::-1][:, :dims], np.float32)


def one_seed(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    t0 = time.perf_counter()
    f = features(a)
    ck = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
    val_set = set(ck["training"]["val_images"])
    paths = list(f["train_paths"])
    val = np.array([p in val_set for p in paths])
    assert val.sum() == len(val_set), "the checkpoint's held-out images are not all in train/good"
    train_p = f["train"][~val].reshape(-1, 128)
    val_q, test_q = f["train"][val], f["test"]
    smooth, k = Smooth(SIGMA, SIZE), thresholds.default_k("memory")
    rec: dict[str, Any] = {"seed": a.seed, "checkpoint": str(a.checkpoint), "load": os.getloadavg(), "runs": []}
    n = bank_entries(train_p.shape[0], 0.01, 128, 32.0)
    if a.b1p:  # addendum 2: B1's bank (same PCA, same coreset) with the p999 pixel threshold
        proj = pca(train_p, 64)
        z = train_p @ proj
        rec["runs"].append(run_bank("B1p", z[select(z, n, a.seed, 0, None)], proj, val_q, test_q, f, smooth, k,
                                    pixel_method="p999"))
        rec["seconds"] = time.perf_counter() - t0
        return rec
    rec["runs"].append(run_bank("ckpt", ck["memory_bank"].numpy(), None, val_q, test_q, f, smooth, k))
    t = time.perf_counter()
    b0 = train_p[select(train_p, n, a.seed, 0, None)]
    rec["B0_coreset_s"] = time.perf_counter() - t
    rec["runs"].append(run_bank("B0", b0, None, val_q, test_q, f, smooth, k))
    proj = pca(train_p, 64)
    z = train_p @ proj
    t = time.perf_counter()
    rec["runs"].append(run_bank("B1", z[select(z, n, a.seed, 0, None)], proj, val_q, test_q, f, smooth, k))
    rec["B1_coreset_s"] = time.perf_counter() - t
    n2 = bank_entries(train_p.shape[0], 0.005, 128, 32.0)
    rec["runs"].append(run_bank("B2", train_p[select(train_p, n2, a.seed, 0, None)], None, val_q, test_q, f,
                                smooth, k))
    rec["seconds"] = time.perf_counter() - t0
    return rec


def mean(recs: list[dict[str, Any]], name: str, path: tuple[str, ...]) -> float:
    vals = []
    for r in recs:
        x: Any = next(u for u in r["runs"] if u["name"] == name)
        for p in path:
            x = x[p]
        vals.append(float(x))
    return float(np.mean(vals))


def table(recs: list[dict[str, Any]]) -> str:
    recs = sorted(recs, key=lambda r: r["seed"])
    lines = ["| seed | bank | entries × dims | image AUROC | pixel AUROC | SegF1 (P / R) | recall / false calls at "
             "the stored threshold | good to REVIEW at 0.5 | region / true area: " + " / ".join(DEFECTS) + " |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        for u in r["runs"]:
            w = u["W0"]
            s = w["segf1"]
            reg = " / ".join(f"{w['regions'][d]['area_ratio_median']:.2f}" for d in DEFECTS)
            lines.append(f"| {r['seed']} | {u['name']} | {u['entries']} × {u['dims']} | {w['image_auroc']:.4f} | "
                         f"{w['pixel_auroc']:.4f} | {s['f1']:.3f} ({s['precision']:.3f} / {s['recall']:.3f}) | "
                         f"{w['recall']:.3f} / {w['false_calls'] * 100:.1f} % | {w['review_share'] * 100:.1f} % | "
                         f"{reg} |")
    lines += ["", "| seed | image score | on bank | image AUROC | recall / false calls |", "|---|---|---|---|---|"]
    for r in recs:
        for u in r["runs"]:
            for wn in ("W0", "W1", "W2"):
                if wn in u:
                    w = u[wn]
                    lines.append(f"| {r['seed']} | {wn} | {u['name']} | {w['image_auroc']:.4f} | {w['recall']:.3f} / "
                                 f"{w['false_calls'] * 100:.1f} % |")
    return "\n".join(lines) + "\n\n" + rule(recs)


DEFECTS = ("blowhole", "break", "crack", "fray", "uneven")


def rule(recs: list[dict[str, Any]]) -> str:
    out = ["## The rule (RULE_R4.md addendum)", ""]
    for r in recs:
        c = next(u for u in r["runs"] if u["name"] == "ckpt")["W0"]
        au, sf = P0[r["seed"]]
        ok = abs(c["image_auroc"] - au) <= 0.002 and abs(c["segf1"]["f1"] - sf) <= 0.01
        out.append(f"- harness check, seed {r['seed']}: the checkpoint's bank gives image AUROC {c['image_auroc']:.4f} "
                   f"(P0 {au}), SegF1 {c['segf1']['f1']:.3f} (P0 {sf}) → {'reproduces' if ok else 'DIFFERS'}")
    seeds = len(recs)
    base = {m: mean(recs, "B0", p) for m, p in (("auroc", ("W0", "image_auroc")), ("segf1", ("W0", "segf1", "f1")),
                                                  ("recall", ("W0", "recall")))}
    out.append(f"- B0 (means over {seeds} seeds): image AUROC {base['auroc']:.4f}, SegF1 {base['segf1']:.3f}, "
               f"recall {base['recall']:.3f}")
    for name in ("B1", "B2"):
        m = {k: mean(recs, name, p) for k, p in (("auroc", ("W0", "image_auroc")), ("segf1", ("W0", "segf1", "f1")),
                                                 ("recall", ("W0", "recall")))}
        ok = (m["auroc"] >= base["auroc"] - 0.003 and m["segf1"] >= base["segf1"] - 0.01
              and m["recall"] >= base["recall"] - 0.01 and seeds == 3)
        out.append(f"- {name}: image AUROC {m['auroc'] - base['auroc']:+.4f} (≥ −0.003), SegF1 "
                   f"{m['segf1'] - base['segf1']:+.3f} (≥ −0.01), recall {m['recall'] - base['recall']:+.3f} (≥ −0.01)"
                   f" → {'passes' if ok else 'does not pass'}")
    w0 = [next(u for u in r["runs"] if u["name"] == "B0")["W0"]["image_auroc"] for r in recs]
    for wn in ("W1", "W2"):
        w = [next(u for u in r["runs"] if u["name"] == "B0")[wn]["image_auroc"] for r in recs]
        ok = np.mean(w) >= np.mean(w0) + 0.003 and all(x >= y for x, y in zip(w, w0, strict=True)) and seeds == 3
        out.append(f"- {wn} on B0: image AUROC {np.mean(w) - np.mean(w0):+.4f} (≥ +0.003, no seed lower: "
                   f"{all(x >= y for x, y in zip(w, w0, strict=True))}) → {'passes' if ok else 'does not pass'}")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    a = parse(argv)
    if a.table:
        recs = [json.loads(p.read_text()) for p in a.table]
        write_text(a.keep / "B_table.md", "# Round 4 addendum: bank size (B) and image score (W), magnetic tile\n\n"
                   + table(recs))
        print(table(recs))
        return 0
    rec = one_seed(a)
    write_json(a.keep / f"B{'1p' if a.b1p else ''}_seed{a.seed}.json", rec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
