"""Round 4 addendum 5, the pictures: good and defective magnetic-tile test parts (3 good + one per defect type, the
same picks as ``score_scale.figure``) drawn by the product's overlay with the model before (no input blur, logsigma
k 3 pixel threshold) and after (today's default: σ 1 input blur, p999 pixel threshold), the true defect outlined
green; the caption is each part's score on the scale.

    python3 benchmarks/r4/blur_overlays.py /tmp/r4scale/seed0/model.pt /tmp/r4v/run/model.pt \
        benchmarks/results/r4/overlays_blur_before_after_seed0.png
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "r4"))

from score_scale import picks  # noqa: E402  (the same parts as the score-scale figures)

from edge_stpm.common.images import read_mask  # noqa: E402
from edge_stpm.runtime.inspector import Inspector  # noqa: E402
from edge_stpm.runtime.overlay import draw_contours  # noqa: E402
from edge_stpm.training.figures import image_grid  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "magnetic_tile"


def main(before: Path, after: Path, out: Path) -> None:
    models = {"before": Inspector.load(before, "pytorch"), "after": Inspector.load(after, "pytorch")}
    tiles, caps = [], []
    for it in picks(DATA):
        frame = cv2.resize(cv2.imread(str(it.path)), (256, 256), interpolation=cv2.INTER_AREA)
        for name, insp in models.items():
            r = insp.inspect(frame)
            t = r.overlay(frame)
            if it.mask is not None:
                draw_contours(t, read_mask(it, 256).astype(np.uint8), (0, 255, 0))
            tiles.append(t)
            caps.append(f"{it.defect} {name}: {r.normalised_score:.2f} {r.verdict}")
    image_grid(tiles, caps, out, cols=2)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
