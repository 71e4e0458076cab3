"""Round 4 addendum 6 (benchmarks/results/accuracy/RULE_R4.md): a finer feature level (stride 4), probed on seed 0.

The teacher's levels 1, 2, 3 (strides 4, 8, 16) of the input blurred by σ 1 (the product's ``Preprocess``), each
3×3-averaged, resized to level 1's 64×64 grid and concatenated (152 dims for MobileNetV2); banks by the product's
numpy ``coreset.select``; scoring, thresholds (image logsigma, pixel ``p999``) and metrics as ``bank_cost.py``. The
held-out split is ``runtime/learn/fit.split`` (train's split for the seed). ``--check`` first runs today's stride-8
I1p on that split: it must reproduce ``I1p_seed0.json`` (the rule's harness check).

    nice -n 19 python3 benchmarks/r4/stride4.py --check
    nice -n 19 python3 benchmarks/r4/stride4.py --candidate F4s ; ... --candidate F4
    python3 benchmarks/r4/stride4.py --table
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "r4"))

import bank_cost as bc  # noqa: E402
import input_blur as ib  # noqa: E402

from edge_stpm.common.files import write_json, write_text  # noqa: E402
from edge_stpm.runtime.learn import thresholds  # noqa: E402
from edge_stpm.runtime.learn.coreset import select  # noqa: E402
from edge_stpm.runtime.learn.fit import split  # noqa: E402

KEEP = ROOT / "benchmarks" / "results" / "r4"
SIGMA_IN = 1.0  # I1p's input blur
HELD_OUT = 0.2  # train's default held-out fraction
BANK_DIVISOR = {"F4s": 4, "F4": 1}  # entries = I1p's entries ÷ this


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    p.add_argument("--cache", type=Path, default=Path("/tmp/r4I"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="the harness check: stride-8 I1p on fit.split's held-out set")
    p.add_argument("--candidate", choices=sorted(BANK_DIVISOR))
    p.add_argument("--table", action="store_true")
    return p.parse_args(argv)


class Stride4(ib.Features):
    """Patch features ``(n, 4096, 152)`` at stride 4: levels 1, 2, 3 averaged 3×3 and resized to level 1's grid."""

    def __call__(self, images: np.ndarray, batch: int = 8) -> np.ndarray:
        import torch.nn.functional as F

        out = []
        with self.torch.no_grad():
            for i in range(0, len(images), batch):
                levels = self.teacher(self.pre(self.torch.from_numpy(images[i : i + batch])))
                feats = [F.avg_pool2d(x.float(), 3, stride=1, padding=1) for x in levels]
                size = feats[0].shape[-2:]
                feats = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                      for f in feats[1:]]
                f = self.torch.cat(feats, dim=1)
                out.append(f.flatten(2).transpose(1, 2).numpy().astype(np.float32))
        return np.concatenate(out)


def cached(path: Path, make) -> np.ndarray:
    if path.exists():
        return np.load(path, mmap_mode="r")
    x = make()
    np.save(path, x)
    return x


def held_out(seed: int, n: int) -> np.ndarray:
    val_idx, _ = split(n, HELD_OUT, seed)
    val = np.zeros(n, bool)
    val[val_idx] = True
    return val


def run(a: argparse.Namespace, name: str, feat: ib.Features, grid: int, entries: int,
        tag: str | None = None) -> dict[str, Any]:
    """One candidate on one seed: features (cached under ``tag``), bank, maps, thresholds, metrics → S4_{name}_seedN."""
    t0 = time.perf_counter()
    d = ib.data(a)
    tag = tag or ("s8" if grid == 32 else "s4")
    train = cached(a.cache / f"{tag}_train.npy", lambda: feat(d["train_img"]))
    test = cached(a.cache / f"{tag}_test.npy", lambda: feat(d["test_img"]))
    t_feat = time.perf_counter() - t0
    val = held_out(a.seed, len(train))
    dims = train.shape[2]
    train_p = np.ascontiguousarray(train[~val]).reshape(-1, dims)
    t = time.perf_counter()
    bank_file = a.cache / f"bank_{name}_seed{a.seed}.npy"
    bank = cached(bank_file, lambda: train_p[select(train_p, entries, a.seed, 0, None)])
    del train_p
    t_core = time.perf_counter() - t
    bc.GRID = grid  # maps_scores and the MAC count read it
    f = {"labels": d["labels"], "masks": d["masks"], "defects": d["defects"]}
    smooth, k = bc.Smooth(bc.SIGMA, bc.SIZE), thresholds.default_k("memory")
    out = bc.run_bank(name, np.asarray(bank), None, np.asarray(train[val]), np.asarray(test), f, smooth, k,
                      pixel_method="p999")
    rec = {"name": name, "seed": a.seed, "grid": grid, "input_blur": SIGMA_IN, "pixel_method": "p999",
           "held_out": int(val.sum()), "load": os.getloadavg(), "run": out,
           "seconds": {"features": t_feat, "coreset": t_core, "all": time.perf_counter() - t0}}
    write_json(KEEP / f"S4_{name}_seed{a.seed}.json", rec)
    return rec


def i1p_entries(seed: int) -> int:
    return int(json.loads((KEEP / f"I1p_seed{seed}.json").read_text())["run"]["entries"])


def table() -> str:
    recs = [json.loads(p.read_text()) for p in sorted(KEEP.glob("S4_*_seed*.json"))]
    ref = json.loads((KEEP / "I1p_seed0.json").read_text())
    rows = [("I1p (stored, 7th session)", ref["run"], 32, ref["seconds"]["all"])]
    rows += [(r["name"], r["run"], r["grid"], r["seconds"]["all"]) for r in recs]
    lines = ["| run | grid | entries × dims | distance MACs / image | image AUROC | pixel AUROC | SegF1 (P / R) | recall / "
             "false calls | good to REVIEW at 0.5 | good coloured median / p90 | region / true area: "
             + " / ".join(bc.DEFECTS) + " | IoU: " + " / ".join(bc.DEFECTS) + " | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r, grid, sec in rows:
        w, s = r["W0"], r["W0"]["segf1"]
        c = w["good_coloured"]["0.5"]
        reg = " / ".join(f"{w['regions'][x]['area_ratio_median']:.2f}" for x in bc.DEFECTS)
        iou = " / ".join(f"{w['regions'][x]['iou_median']:.2f}" for x in bc.DEFECTS)
        lines.append(f"| {name} | {grid}² | {r['entries']} × {r['dims']} | {r['distance_macs'] / 1e6:.0f} M | "
                     f"{w['image_auroc']:.4f} | {w['pixel_auroc']:.4f} | {s['f1']:.3f} ({s['precision']:.3f} / "
                     f"{s['recall']:.3f}) | {w['recall']:.3f} / {w['false_calls'] * 100:.1f} % | "
                     f"{w['review_share'] * 100:.1f} % | {c['median'] * 100:.1f} / {c['p90'] * 100:.1f} % | {reg} | "
                     f"{iou} | {sec:.0f} |")
    return "\n".join(lines) + "\n\n" + verdict(ref["run"]["W0"], {r["name"]: r for r in recs}) + "\n"


def verdict(i1p: dict[str, Any], recs: dict[str, dict[str, Any]]) -> str:
    out = []
    if "I1p" in recs:
        w = recs["I1p"]["run"]["W0"]
        ok = abs(w["image_auroc"] - i1p["image_auroc"]) <= 0.002 and abs(w["segf1"]["f1"] - i1p["segf1"]["f1"]) <= 0.01
        out.append(f"- harness check (stride-8 I1p on fit.split's held-out set vs I1p_seed0.json): image AUROC "
                   f"{w['image_auroc']:.4f} vs {i1p['image_auroc']:.4f}, SegF1 {w['segf1']['f1']:.3f} vs "
                   f"{i1p['segf1']['f1']:.3f} → {'reproduces' if ok else 'DIFFERS: nothing is concluded'}")
        i1p = w
    for name in ("F4s", "F4"):
        if name not in recs:
            continue
        w = recs[name]["run"]["W0"]
        lead = w["segf1"]["f1"] >= i1p["segf1"]["f1"] + 0.02 and w["image_auroc"] >= i1p["image_auroc"] - 0.005
        out.append(f"- {name}: SegF1 {w['segf1']['f1']:.3f} (lead needs ≥ {i1p['segf1']['f1'] + 0.02:.3f}), image "
                   f"AUROC {w['image_auroc']:.4f} (needs ≥ {i1p['image_auroc'] - 0.005:.4f}) → "
                   f"{'a lead' if lead else 'not a lead'}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    a = parse(argv)
    if a.table:
        text = table()
        write_text(KEEP / "S4_table.md", text)
        print(text)
        return 0
    a.cache.mkdir(parents=True, exist_ok=True)
    n = i1p_entries(a.seed)
    if a.check:
        rec = run(a, "I1p", ib.Features(SIGMA_IN), 32, n)
    else:
        rec = run(a, a.candidate, Stride4(SIGMA_IN), 64, n // BANK_DIVISOR[a.candidate])
    w = rec["run"]["W0"]
    print(f"{rec['name']} seed {a.seed}: AUROC {w['image_auroc']:.4f} pixel {w['pixel_auroc']:.4f} SegF1 "
          f"{w['segf1']['f1']:.3f} ({rec['seconds']['all']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
