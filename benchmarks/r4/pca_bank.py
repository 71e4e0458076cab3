"""Round 4 addendum 13 (benchmarks/results/accuracy/RULE_R4.md): I1p's bank in 64 principal dims — Q64 (I1p's entry
count, half the distance MACs) and Q64x2 (twice the entries, today's MACs), on ``stride4.py``'s cached stride-8
features (σ 1 input blur). The projection is fitted on each seed's own training part of train/good
(``bank_cost.pca``) and applied to the bank and every query; the rest is ``level_weight.candidate``'s (the product's
numpy coreset, σ 4 smoothing, top 2 %, logsigma image threshold, p999 pixel threshold, ``fit.split``'s held-out sets).

    nice -n 19 python3 benchmarks/r4/pca_bank.py --name Q64 --seed 0 ; ... --seed 1 ; ... --seed 2
    nice -n 19 python3 benchmarks/r4/pca_bank.py --name Q64x2 --seed 0 ; ...
    python3 benchmarks/r4/pca_bank.py --table
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "r4"))

import bank_cost as bc  # noqa: E402
import common  # noqa: E402
import input_blur as ib  # noqa: E402
import neighbourhood as nb  # noqa: E402
import stride4 as s4  # noqa: E402

from edge_stpm.common.files import write_json, write_text  # noqa: E402
from edge_stpm.runtime.learn import thresholds  # noqa: E402
from edge_stpm.runtime.learn.coreset import select  # noqa: E402

DIMS = 64
CANDIDATES = {"Q64": 1, "Q64x2": 2}  # name → I1p's entry count times this


def candidate(a: argparse.Namespace, project: Callable[[np.ndarray], np.ndarray] | None = None,
              entries_times: int | None = None) -> dict[str, Any]:
    """One candidate on one seed → ``S4_{name}_seed{seed}.json`` (the records ``neighbourhood.table`` reads);
    ``project`` makes the linear map from the training features (default: their first 64 principal directions),
    ``entries_times`` I1p's entry count times it (default: the candidate's)."""
    t0 = time.perf_counter()
    d = ib.data(a)
    train = np.load(a.cache / "s8_train.npy", mmap_mode="r")
    test = np.load(a.cache / "s8_test.npy", mmap_mode="r")
    val = s4.held_out(a.seed, len(train))
    tr = np.asarray(train[~val]).reshape(-1, train.shape[2])
    proj = project(tr) if project is not None else bc.pca(tr, DIMS)
    z = tr @ proj
    del tr
    entries = s4.i1p_entries(a.seed) * (entries_times or CANDIDATES[a.name])
    t = time.perf_counter()
    bank = z[select(z, entries, a.seed, 0, None)]
    coreset_s = time.perf_counter() - t
    del z
    bc.GRID = 32
    f = {"labels": d["labels"], "masks": d["masks"], "defects": d["defects"]}
    smooth, k = bc.Smooth(bc.SIGMA, bc.SIZE), thresholds.default_k("memory")
    out = bc.run_bank(a.name, bank, proj, np.asarray(train[val]), np.asarray(test), f, smooth, k,
                      pixel_method="p999")
    rec = {"name": a.name, "seed": a.seed, "grid": 32, "input_blur": s4.SIGMA_IN, "pixel_method": "p999",
           "dims": int(proj.shape[1]), "held_out": int(val.sum()), "load": os.getloadavg(), "run": out,
           "seconds": {"coreset": coreset_s, "all": time.perf_counter() - t0}}
    write_json(s4.KEEP / f"S4_{a.name}_seed{a.seed}.json", rec)
    return rec


def judge(name: str) -> str:
    """Addendum 13's three margins against I1p (3-seed means; the coloured share on every seed in every case)."""
    recs = {(n, s): json.loads((s4.KEEP / f"S4_{n}_seed{s}.json").read_text()) for n in ("I1p", name) for s in (0, 1, 2)
            if (s4.KEEP / f"S4_{n}_seed{s}.json").exists()}
    if len(recs) < 6:
        return f"- {name}: {len(recs)} of 6 runs (the judgement needs 3 seeds of both)"

    def each(n: str, get) -> list[float]:
        return [float(get(recs[(n, s)]["run"]["W0"])) for s in (0, 1, 2)]

    auc0, auc1 = each("I1p", lambda w: w["image_auroc"]), each(name, lambda w: w["image_auroc"])
    da = float(np.mean(auc1) - np.mean(auc0))
    df = float(np.mean(each(name, lambda w: w["segf1"]["f1"])) - np.mean(each("I1p", lambda w: w["segf1"]["f1"])))
    dr = float(np.mean(each(name, lambda w: w["recall"])) - np.mean(each("I1p", lambda w: w["recall"])))
    col = [recs[(name, s)]["run"]["W0"]["good_coloured"]["0.5"] for s in (0, 1, 2)]
    coloured = all(c["median"] <= 0.02 and c["p90"] <= 0.05 for c in col)
    margins = {
        "image-side (AUROC ≥ +0.003, no seed below its own, SegF1 ≥ −0.01, recall ≥ −0.01)":
            da >= 0.003 and all(b >= a for a, b in zip(auc0, auc1, strict=True)) and df >= -0.01 and dr >= -0.01,
        "pixel-side (SegF1 ≥ +0.02, AUROC ≥ −0.005, recall ≥ −0.01)": df >= 0.02 and da >= -0.005 and dr >= -0.01,
    }
    if name == "Q64":
        margins["cost (AUROC ≥ −0.001, SegF1 ≥ −0.005, recall ≥ −0.01; then the bench)"] = (
            da >= -0.001 and df >= -0.005 and dr >= -0.01)
    lines = [f"- {name} − I1p, 3-seed means: image AUROC {da:+.4f} (per seed "
             + ", ".join(f"{b - a:+.4f}" for a, b in zip(auc0, auc1, strict=True))
             + f"), SegF1 {df:+.3f}, recall {dr:+.3f}",
             "- coloured median / p90 per seed: " + ", ".join(f"{c['median'] * 100:.1f} / {c['p90'] * 100:.1f} %"
                                                               for c in col) + " (≤ 2 / 5 %): "
             + ("pass" if coloured else "FAIL")]
    lines += [f"- {m}: {'pass' if ok and coloured else 'FAIL'}" for m, ok in margins.items()]
    passed = coloured and any(margins.values())
    lines.append(f"- **{name} {'passes' if passed else 'does not pass'}**")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = common.parser(__doc__)
    p.add_argument("--name", choices=sorted(CANDIDATES), default="Q64")
    a = p.parse_args(argv)
    if a.table:
        text = "\n\n".join(nb.table(n).split("\n\n")[0] + "\n\n" + judge(n) for n in CANDIDATES) + "\n"
        write_text(s4.KEEP / "Q_table.md", text)
        print(text)
        return 0
    w = candidate(a)["run"]["W0"]
    print(f"{a.name} seed {a.seed}: AUROC {w['image_auroc']:.4f} pixel {w['pixel_auroc']:.4f} "
          f"SegF1 {w['segf1']['f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
