"""Round 4 addendum 15 (benchmarks/results/accuracy/RULE_R4.md): I1p's patch features whitened (W = C^(-1/2), C the
Ledoit-Wolf covariance of each seed's own training part of train/good), on ``stride4.py``'s cached stride-8 features;
the rest is ``pca_bank.candidate``'s (the product's numpy coreset with I1p's entry count, σ 4 smoothing, top 2 %,
logsigma image threshold, p999 pixel threshold, ``fit.split``'s held-out sets). Records ``S4_Z_seed{N}.json``.

    nice -n 19 python3 benchmarks/r4/whiten.py --seed 0        (the probe; seeds 1-2 only for a lead)
    python3 benchmarks/r4/whiten.py --table
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "r4"))

import common  # noqa: E402
import neighbourhood as nb  # noqa: E402
import pca_bank as pb  # noqa: E402
import stride4 as s4  # noqa: E402

from edge_stpm.common.files import write_text  # noqa: E402


def whitening(x: np.ndarray, sample: int = 200_000, seed: int = 0) -> np.ndarray:
    """``C^(-1/2)`` (symmetric) of the rows' Ledoit-Wolf covariance, on a seeded sample of at most ``sample`` rows."""
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(seed)
    rows = x if len(x) <= sample else x[rng.choice(len(x), sample, replace=False)]
    c = LedoitWolf().fit(rows.astype(np.float64)).covariance_
    w, v = np.linalg.eigh(c)
    return np.ascontiguousarray((v / np.sqrt(w)) @ v.T, np.float32)


def probe() -> str:
    """Addendum 15's probe on seed 0 against I1p; with seeds 1-2 run (a lead), addendum 13's judgement too."""
    z, i = (json.loads((s4.KEEP / f"S4_{n}_seed0.json").read_text())["run"]["W0"] for n in ("Z", "I1p"))
    da, df = z["image_auroc"] - i["image_auroc"], z["segf1"]["f1"] - i["segf1"]["f1"]
    lead = da >= 0.003 or (df >= 0.02 and da >= -0.005)
    text = (f"- probe, seed 0: image AUROC {da:+.4f} (lead at ≥ +0.003), SegF1 {df:+.3f} (lead at ≥ +0.02 with "
            f"AUROC ≥ −0.005): **{'a lead' if lead else 'not a lead'}**")
    return text + ("\n" + pb.judge("Z") if lead else "")


def main(argv: list[str]) -> int:
    p = common.parser(__doc__)
    a = p.parse_args(argv)
    if a.table:
        text = nb.table("Z").split("\n\n")[0] + "\n\n" + probe() + "\n"
        write_text(s4.KEEP / "Z_table.md", text)
        print(text)
        return 0
    a.name = "Z"
    w = pb.candidate(a, project=lambda tr: whitening(tr, seed=a.seed), entries_times=1)["run"]["W0"]
    print(f"Z seed {a.seed}: AUROC {w['image_auroc']:.4f} pixel {w['pixel_auroc']:.4f} SegF1 {w['segf1']['f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
