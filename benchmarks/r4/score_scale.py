"""Round 4, the one score scale (benchmarks/results/accuracy/RULE_R4.md: a definition, judged by the targets on the
test good parts — the overlay colours ≤ 2 % of a good part (median) and ≤ 5 % (p90); at a review band of 0.5 at
most 5 % of good parts go to REVIEW). The same trained magnetic-tile checkpoints as step P, recalibrated with
today's default (P0: the same thresholds, now with the scale's zero stored) and evaluated; "before" is step P's
P0 of the same seed (the old scale: 0 = a zero score). Also draws the overlays of good and defective test parts
before and after (seed 0).

    nice -n 19 python3 benchmarks/r4/score_scale.py --seed 0 --checkpoint /tmp/r4/baseline_seed0/run/model.pt
    python3 benchmarks/r4/score_scale.py --table benchmarks/results/r4/scale_seed*.json

Writes benchmarks/results/r4/scale_seedSEED.json, scale_table.md and overlays_before_after_seedSEED.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pixel_threshold as P  # noqa: E402  (helpers shared with step P)

REVIEW_BAND = 0.5


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--data", type=Path, default=P.ROOT.parent / "shared" / "data" / "magnetic_tile")
    p.add_argument("--work", type=Path, default=Path("/tmp/r4scale"))
    p.add_argument("--keep", type=Path, default=P.ROOT / "benchmarks" / "results" / "r4")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--table", nargs="+", type=Path, default=None)
    return p.parse_args(argv)


def good_review_share(report: dict[str, Any], old: bool) -> float | None:
    """Share of good test images a review band of 0.5 would take out of OK (REVIEW or NG): on the new scale from
    the report's ``good_test_scores``; on the old one (u = score / threshold) from the step-P report's scores."""
    if old:
        return None
    return report["good_test_scores"]["share_at_or_above_0.5"]


def picks(data: Path) -> list[Any]:
    """The parts the overlay figures show: 3 good test parts and one of each defect type (seeded)."""
    from edge_stpm.common.images import labelled_test_images

    items = labelled_test_images(data)
    rng = np.random.default_rng(0)
    good = [i for i in items if i.defect == "good"]
    out = [good[j] for j in rng.choice(len(good), 3, replace=False)]
    for d in sorted({i.defect for i in items} - {"good"}):
        cand = [i for i in items if i.defect == d]
        out.append(cand[int(rng.integers(len(cand)))])
    return out


def figure(ck: Path, data: Path, out: Path) -> None:
    """Good and defective test parts (3 + one per defect type), each drawn with the old scale's overlay (colour
    from 0.5 × the pixel threshold) and the new one (from 0.5 on the score scale), the true defect outlined green."""
    import cv2

    from edge_stpm.common.images import read_mask
    from edge_stpm.runtime.inspector import Inspector
    from edge_stpm.runtime.overlay import draw_contours, inspection_overlay
    from edge_stpm.training.figures import image_grid

    insp = Inspector.load(ck, "pytorch")
    tiles, caps = [], []
    for it in picks(data):
        frame = cv2.resize(cv2.imread(str(it.path)), (256, 256), interpolation=cv2.INTER_AREA)
        r = insp.inspect(frame)
        old_u = r.score / r.image_threshold
        before = inspection_overlay(frame, r.anomaly_map, r.pixel_threshold, r.ng, old_u, r.image_threshold,
                                    verdict=r.verdict, zero=0.0)
        after = r.overlay(frame)
        if it.mask is not None:
            m = read_mask(it, 256).astype(np.uint8)
            for t in (before, after):
                draw_contours(t, m, (0, 255, 0))
        tiles += [before, after]
        caps += [f"{it.defect} before: {old_u:.2f}", f"{it.defect} after: {r.normalised_score:.2f}"]
    image_grid(tiles, caps, out, cols=2)


def one_seed(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    from edge_stpm.training import checkpoint
    from edge_stpm.training.calibrate import recalibrate
    from edge_stpm.training.devices import set_threads
    from edge_stpm.training.evaluate import evaluate, torch_infer

    set_threads(a.threads)
    ck = a.work / f"seed{a.seed}" / "model.pt"
    ck.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(a.checkpoint, ck)
    prev = json.loads((a.keep / f"P_seed{a.seed}.json").read_text())["candidates"]["P0"]
    pipe, _ = checkpoint.load_pipeline(ck)
    infer = P.cached(torch_infer(pipe.eval(), torch.device("cpu")))
    t0 = time.perf_counter()
    thr = recalibrate(ck, quiet=True, infer=infer)
    rep = evaluate(ck, a.data, ck.parent / "report", quiet=True, infer=infer)
    rec = {"seed": a.seed, "checkpoint": str(a.checkpoint), "commit": P.commit(), "loadavg_start": list(os.getloadavg()),
           "seconds": time.perf_counter() - t0, "thresholds": thr, "report": rep,
           "before": {"thresholds": prev["thresholds"], "good_coloured": prev["report"]["segmentation"]["good_coloured"],
                      "image_auroc": prev["report"]["overall"]["image_auroc"]}}
    figure(ck, a.data, a.keep / f"overlays_before_after_seed{a.seed}.png")
    return rec


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def table_md(records: list[dict[str, Any]]) -> str:
    head = ["seed", "image zero / threshold", "pixel zero / threshold", "good coloured before: median / p90",
            "after: median / p90", "good test u: median / p90", f"good at u ≥ {REVIEW_BAND} (review band)",
            "good at u ≥ 1 (false calls)", "image AUROC before / after"]
    rows = []
    for r in sorted(records, key=lambda r: r["seed"]):
        sc, b, rep = r["thresholds"]["score_scale"], r["before"], r["report"]
        ga, gb, gs = rep["segmentation"]["good_coloured"]["0.5"], b["good_coloured"]["0.5"], rep["good_test_scores"]
        rows.append(f"| {r['seed']} | {sc['image_zero']:.4g} / {r['thresholds']['image']:.4g} | "
                    f"{sc['pixel_zero']:.4g} / {r['thresholds']['pixel']:.4g} | {_pct(gb['median'])} / {_pct(gb['p90'])} | "
                    f"{_pct(ga['median'])} / {_pct(ga['p90'])} | {gs['median']:.2f} / {gs['p90']:.2f} | "
                    f"{_pct(gs['share_at_or_above_0.5'])} | {_pct(gs['share_at_or_above_1'])} | "
                    f"{b['image_auroc']:.4f} / {rep['overall']['image_auroc']:.4f} |")
    return "\n".join(["# Round 4: the one score scale on magnetic tile (RULE_R4.md)", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows, ""])


def main(argv: list[str]) -> int:
    a = parse(argv)
    from edge_stpm.common.files import ensure_dir, write_json, write_text

    keep = ensure_dir(a.keep)
    if a.table:
        md = table_md([json.loads(p.read_text()) for p in a.table])
        write_text(keep / "scale_table.md", md)
        print(md)
        return 0
    if a.checkpoint is None or not a.checkpoint.is_file():
        sys.exit(f"--checkpoint {a.checkpoint}: no such model.pt")
    rec = one_seed(a)
    write_json(keep / f"scale_seed{a.seed}.json", rec)
    print(table_md([rec]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
