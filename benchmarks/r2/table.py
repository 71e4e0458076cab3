"""Table of the round-2 head candidates (benchmarks/r2/image_score.py outputs, one JSON per seed) by the rule in
benchmarks/results/accuracy/RULE_R2.md. usage: python benchmarks/r2/table.py JSON [JSON ...] > TABLE.md"""
from __future__ import annotations

import json
import sys

import numpy as np

runs = [json.load(open(p)) for p in sys.argv[1:]]
names = list(runs[0]["candidates"])
defects = sorted(runs[0]["candidates"][names[0]]["per_defect_image"])
base = "product/max"


def rule(name: str) -> float:
    return float(np.mean([(r["candidates"][name]["image_auroc"] + r["candidates"][name]["pixel_auroc"]) / 2 for r in runs]))


def cell(name: str, key: str) -> str:
    v = [r["candidates"][name][key] for r in runs]
    return f"{np.mean(v):.4f} ({min(v):.3f}–{max(v):.3f})"


print(f"Seeds: {len(runs)} ({', '.join(r['checkpoint'] for r in runs)})\n")
print("| candidate (map / image score) | rule score | Δ vs current | image AUROC mean (min–max) | pixel AUROC | AUPRO@0.3 | "
      + " | ".join(f"image {d}" for d in defects) + " |")
print("|---|---|---|---|---|---|" + "---|" * len(defects))
for n in sorted(names, key=rule, reverse=True):
    per = [f"{np.mean([r['candidates'][n]['per_defect_image'][d] for r in runs]):.3f}" for d in defects]
    print(f"| {n}{' (current)' if n == base else ''} | {rule(n):.4f} | {rule(n) - rule(base):+.4f} | "
          f"{cell(n, 'image_auroc')} | {cell(n, 'pixel_auroc')} | {cell(n, 'aupro')} | " + " | ".join(per) + " |")
pix = {d: np.mean([r["candidates"][base]["per_defect_pixel"][d] for r in runs]) for d in defects}
print("\nPer-defect pixel AUROC, product map: " + ", ".join(f"{d} {v:.3f}" for d, v in pix.items()))
n2 = "sum_standardised/max"
print("Per-defect pixel AUROC, standardised sum: " + ", ".join(
    f"{d} {np.mean([r['candidates'][n2]['per_defect_pixel'][d] for r in runs]):.3f}" for d in defects))
