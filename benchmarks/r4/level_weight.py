"""Round 4 addendum 11 (benchmarks/results/accuracy/RULE_R4.md): level 2's weight w in the memory head's patch
feature (its 32 channels × w before the coreset and every query), w 0.5 / 1 (today) / 2, on ``stride4.py``'s cached
stride-8 features (σ 1 input blur).

``--choose`` scores each w on seed 0's synthetic anomalies of the held-out good images (SegF1 at the candidate's own
p999 pixel threshold; no test labels) and picks one; ``--weight W --seed N`` measures one candidate on the test split
(``S4_W{W}_seed{N}.json``, as ``stride4.py``'s runs); ``--table`` prints the table and the judgement.

    nice -n 19 python3 benchmarks/r4/level_weight.py --choose
    nice -n 19 python3 benchmarks/r4/level_weight.py --weight 2 --seed 1 ; ...
    python3 benchmarks/r4/level_weight.py --table
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
import neighbourhood as nb  # noqa: E402
import stride4 as s4  # noqa: E402

from edge_stpm.common.files import write_json, write_text  # noqa: E402
from edge_stpm.runtime.learn import thresholds  # noqa: E402
from edge_stpm.runtime.learn.coreset import select  # noqa: E402
from edge_stpm.runtime.learn.synthetic import KINDS, make  # noqa: E402
from edge_stpm.training import segmetrics  # noqa: E402

WEIGHTS = (0.5, 1.0, 2.0)
LEVEL2 = 32  # MobileNetV2's level-2 channels: the first 32 of the 128 patch dims


def scaled(x: np.ndarray, w: float) -> np.ndarray:
    out = np.array(x, np.float32)  # a copy (the cache is memory-mapped, read-only)
    out[..., :LEVEL2] *= np.float32(w)
    return out


def name(w: float) -> str:
    return f"W{w:g}"


def candidate(a: argparse.Namespace, w: float, seed: int) -> dict[str, Any]:
    """One w on one seed: the bank, the held-out and test maps, thresholds and the test metrics (``bc.run_bank``)."""
    t0 = time.perf_counter()
    d = ib.data(a)
    train = np.load(a.cache / "s8_train.npy", mmap_mode="r")
    test = np.load(a.cache / "s8_test.npy", mmap_mode="r")
    val = s4.held_out(seed, len(train))
    tr = scaled(train[~val], w).reshape(-1, train.shape[2])
    bank_file = a.cache / f"bank_{name(w)}_seed{seed}.npy"
    if w == 1.0:
        bank_file = a.cache / f"bank_I1p_seed{seed}.npy"  # today's I1p bank
    bank = np.load(bank_file) if bank_file.exists() else tr[select(tr, s4.i1p_entries(seed), seed, 0, None)]
    np.save(bank_file, bank)
    del tr
    bc.GRID = 32
    f = {"labels": d["labels"], "masks": d["masks"], "defects": d["defects"]}
    smooth, k = bc.Smooth(bc.SIGMA, bc.SIZE), thresholds.default_k("memory")
    out = bc.run_bank(name(w), bank, None, scaled(train[val], w), scaled(test, w), f, smooth, k, pixel_method="p999")
    rec = {"name": name(w), "weight": w, "seed": seed, "grid": 32, "input_blur": s4.SIGMA_IN, "pixel_method": "p999",
           "held_out": int(val.sum()), "load": os.getloadavg(), "run": out,
           "seconds": {"all": time.perf_counter() - t0}}
    write_json(s4.KEEP / f"S4_{name(w)}_seed{seed}.json", rec)
    return {"rec": rec, "bank": bank, "val": val, "data": d}


def choose(a: argparse.Namespace) -> dict[str, Any]:
    feat = ib.Features(s4.SIGMA_IN)
    d = ib.data(a)
    val = s4.held_out(0, len(d["train_img"]))
    synth = {kind: make(d["train_img"][val], kind, 0) for kind in KINDS}
    feats = {kind: feat(bad) for kind, (bad, _) in synth.items()}
    masks = np.concatenate([m for _, m in synth.values()]).astype(bool)
    scores: dict[str, Any] = {}
    for w in WEIGHTS:
        c = candidate(a, w, 0)
        bank, t = c["bank"], c["rec"]["run"]["thresholds"]["pixel"]
        sq = (bank * bank).sum(1)
        maps = np.concatenate([bc.maps_scores(bc.nearest(scaled(feats[kind], w), bank, sq)[0], bc.Smooth(
            bc.SIGMA, bc.SIZE))[0] for kind in KINDS])
        scores[f"{w:g}"] = segmetrics.seg_f1(maps, masks, t)
        print(f"w {w:g}: synthetic SegF1 {scores[f'{w:g}']['f1']:.4f}", flush=True)
    best = max(WEIGHTS, key=lambda w: scores[f"{w:g}"]["f1"])
    if scores[f"{best:g}"]["f1"] < scores["1"]["f1"] + 0.01:
        best = 1.0
    rec = {"seed": 0, "kinds": list(KINDS), "synthetic_segf1": scores, "chosen": best}
    write_json(s4.KEEP / "W_choice_seed0.json", rec)
    print("→ w", best, flush=True)
    return rec


def table() -> str:
    choice = json.loads((s4.KEEP / "W_choice_seed0.json").read_text())
    w = float(choice["chosen"])
    head = ("**Label-free choice** (seed 0, synthetic anomalies of the held-out good images, SegF1 at each candidate's "
            "own p999 threshold): " + ", ".join(f"w {k} {v['f1']:.4f}" for k, v in choice["synthetic_segf1"].items())
            + f" → **w {w:g}**\n\n")
    if w == 1.0:
        return head + "- w 1 chosen: nothing is judged, nothing changes.\n"
    return head + nb.table(name(w))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    p.add_argument("--cache", type=Path, default=Path("/tmp/r4I"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight", type=float, default=None)
    p.add_argument("--choose", action="store_true")
    p.add_argument("--table", action="store_true")
    a = p.parse_args(argv)
    if a.table:
        text = table()
        write_text(s4.KEEP / "W_table.md", text)
        print(text)
        return 0
    if a.choose:
        choose(a)
    if a.weight is not None:
        w = candidate(a, a.weight, a.seed)["rec"]["run"]["W0"]
        print(f"w {a.weight:g} seed {a.seed}: AUROC {w['image_auroc']:.4f} SegF1 {w['segf1']['f1']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
