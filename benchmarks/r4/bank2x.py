"""Round 4 addendum 20 (benchmarks/results/accuracy/RULE_R4.md): I1p with twice its bank entries (B2x), FP32 and Q8.

``stride4.run`` with 2 × I1p's entries on the cached stride-8 features (the product's numpy coreset, same seed and
split) → ``S4_B2x_seed{N}.json``; then the same bank with ``int8_bank``'s INT8 dot product → ``S4_B2xQ8_seed{N}.json``.
``--table`` judges B2x by addendum 13's margins (``pca_bank.judge``) → ``B2x_table.md``.

    nice -n 19 python3 benchmarks/r4/bank2x.py --seed N       (after stride4.py --check --seed N)
    python3 benchmarks/r4/bank2x.py --table
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "r4"))

import bank_cost as bc  # noqa: E402
import common  # noqa: E402
import input_blur as ib  # noqa: E402
import int8_bank as q8  # noqa: E402
import neighbourhood as nb  # noqa: E402
import pca_bank as pb  # noqa: E402
import stride4 as s4  # noqa: E402

from edge_stpm.common.files import write_json, write_text  # noqa: E402


def with_q8(a) -> dict:
    """The B2x bank of this seed with the INT8 dot product (the query scale as ``int8_bank.candidate``)."""
    exact = bc.nearest
    train = np.load(a.cache / "s8_train.npy", mmap_mode="r")
    val = s4.held_out(a.seed, len(train))
    sx = float(max(np.abs(np.asarray(train[i])).max() for i in np.flatnonzero(~val)) / q8.Q)
    bc.nearest = q8.nearest_q8(sx)
    try:
        rec = s4.run(a, "B2x", ib.Features(s4.SIGMA_IN), 32, 2 * s4.i1p_entries(a.seed))
    finally:
        bc.nearest = exact
    rec["name"], rec["query_scale"] = "B2xQ8", sx
    write_json(s4.KEEP / f"S4_B2xQ8_seed{a.seed}.json", rec)
    # s4.run wrote the Q8 record under B2x's name; the FP32 run then writes its own
    (s4.KEEP / f"S4_B2x_seed{a.seed}.json").unlink()
    return rec


def main(argv: list[str]) -> int:
    a = common.parser(__doc__).parse_args(argv)
    if a.table:
        text = (nb.table("B2x").split("\n\n")[0] + "\n\n" + pb.judge("B2x") + "\n\nB2x with Q8 (reported):\n\n"
                + nb.table("B2xQ8").split("\n\n")[0] + "\n")
        write_text(s4.KEEP / "B2x_table.md", text)
        print(text)
        return 0
    w8 = with_q8(a)["run"]["W0"]
    w = s4.run(a, "B2x", ib.Features(s4.SIGMA_IN), 32, 2 * s4.i1p_entries(a.seed))["run"]["W0"]
    print(f"B2x seed {a.seed}: AUROC {w['image_auroc']:.4f} SegF1 {w['segf1']['f1']:.3f}; with Q8 "
          f"{w8['image_auroc']:.4f} / {w8['segf1']['f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
