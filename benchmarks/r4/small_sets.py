"""Round 4 addendum 17 (benchmarks/results/accuracy/RULE_R4.md): how many good images the thresholds need. I1p's
settings on ``stride4.py``'s cached stride-8 features (σ 1 input blur), train/good subsampled to N images (seeded),
``fit.split``'s 20 % held out, the product's coreset share of the fitted patches; false calls and recall on the whole
test split at the stored thresholds. Records ``SN_seed{S}.json`` in benchmarks/results/r4/small_sets/.

    nice -n 19 python3 benchmarks/r4/small_sets.py --seed 0 ; ... --seed 1 ; ... --seed 2
    python3 benchmarks/r4/small_sets.py --table
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "r4"))

import bank_cost as bc  # noqa: E402
import common  # noqa: E402
import input_blur as ib  # noqa: E402
import stride4 as s4  # noqa: E402

from edge_stpm.common.files import write_json, write_text  # noqa: E402
from edge_stpm.runtime.learn import thresholds  # noqa: E402
from edge_stpm.runtime.learn.coreset import bank_entries, select  # noqa: E402
from edge_stpm.runtime.learn.fit import split  # noqa: E402

SIZES = (40, 80, 160, 320, 714)
OUT = s4.KEEP / "small_sets"


def one(train: np.ndarray, test: np.ndarray, d: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
    """N images of train/good (a seeded subsample), 20 % held out, the bank, thresholds and test metrics."""
    pick = np.sort(np.random.default_rng(seed).permutation(len(train))[:n])
    val_i, fit_i = split(n, s4.HELD_OUT, seed)
    fitted = np.ascontiguousarray(train[pick[fit_i]]).reshape(-1, train.shape[2])
    bank = fitted[select(fitted, bank_entries(len(fitted), 0.01, fitted.shape[1], 32.0), seed, 0, None)]
    f = {"labels": d["labels"], "masks": d["masks"], "defects": d["defects"]}
    smooth, k = bc.Smooth(bc.SIGMA, bc.SIZE), thresholds.default_k("memory")
    out = bc.run_bank(f"S{n}", bank, None, np.asarray(train[pick[val_i]]), test, f, smooth, k, pixel_method="p999")
    return {"n": n, "held_out": int(len(val_i)), "fitted": int(len(fit_i)), "seed": seed, "run": out}


def table() -> str:
    recs = [json.loads(p.read_text()) for p in sorted(OUT.glob("S*_seed*.json"))]
    lines = ["| N images | held out | seed | entries | image AUROC | false calls on 238 good | recall | "
             "review at 0.5 | good coloured median / p90 |", "|---|---|---|---|---|---|---|---|---|"]
    means: dict[int, dict[str, float]] = {}
    for n in SIZES:
        rs = sorted((r for r in recs if r["n"] == n), key=lambda r: r["seed"])
        for r in rs:
            w = r["run"]["W0"]
            c = w["good_coloured"]["0.5"]
            lines.append(f"| {n} | {r['held_out']} | {r['seed']} | {r['run']['entries']} | {w['image_auroc']:.4f} | "
                         f"{w['false_calls'] * 100:.1f} % | {w['recall']:.3f} | {w['review_share'] * 100:.1f} % | "
                         f"{c['median'] * 100:.1f} / {c['p90'] * 100:.1f} % |")
        if len(rs) == 3:
            means[n] = {"held_out": float(rs[0]["held_out"]),
                        "false_calls": float(np.mean([r["run"]["W0"]["false_calls"] for r in rs])),
                        "recall": float(np.mean([r["run"]["W0"]["recall"] for r in rs])),
                        "auroc": float(np.mean([r["run"]["W0"]["image_auroc"] for r in rs]))}
    lines += ["", "| N images | held out | mean false calls | mean recall | mean image AUROC |",
              "|---|---|---|---|---|"]
    lines += [f"| {n} | {m['held_out']:.0f} | {m['false_calls'] * 100:.1f} % | {m['recall']:.3f} | {m['auroc']:.4f} |"
              for n, m in means.items()]
    return "\n".join(lines) + "\n\n" + judge(means) + "\n"


def judge(means: dict[int, dict[str, float]]) -> str:
    if len(means) < len(SIZES):
        return f"- sizes with 3 seeds: {sorted(means)} (the rule needs all of {list(SIZES)})"
    f = means[714]["false_calls"]
    ok = [n for n in SIZES if means[n]["false_calls"] <= 2 * f]
    smallest = min(ok)
    if smallest == SIZES[0]:
        return f"- every N has mean false calls ≤ 2 F = {2 * f * 100:.1f} %: no warning line"
    return (f"- F = {f * 100:.1f} % (N 714); the smallest N with mean false calls ≤ 2 F = {2 * f * 100:.1f} % is "
            f"**{smallest}** (held out {means[smallest]['held_out']:.0f}): the line fires below that many held-out "
            f"images")


def main(argv: list[str]) -> int:
    p = common.parser(__doc__)
    a = p.parse_args(argv)
    if a.table:
        text = table()
        write_text(OUT / "table.md", text)
        print(text)
        return 0
    d = ib.data(a)
    train = np.load(a.cache / "s8_train.npy", mmap_mode="r")
    test = np.asarray(np.load(a.cache / "s8_test.npy", mmap_mode="r"))
    bc.GRID = 32
    for n in SIZES:
        rec = one(train, test, d, n, a.seed) | {"load": os.getloadavg()}
        write_json(OUT / f"S{n}_seed{a.seed}.json", rec)
        w = rec["run"]["W0"]
        print(f"N {n} seed {a.seed}: held out {rec['held_out']}, false calls {w['false_calls'] * 100:.1f} %, "
              f"recall {w['recall']:.3f}, AUROC {w['image_auroc']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
