"""The one score scale (contract/scale.py): 0 = the calibration's good median, 1 = the threshold, for the image score
and the map, on the host and in every sink; old models keep the old scale (0 = a zero score) and say so."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_stpm.contract.scale import ScoreScale
from edge_stpm.runtime.inspector import Inspector
from edge_stpm.training.segmetrics import coloured_shares

OLD = {"image": 2.0, "pixel": 4.0, "method": "logsigma"}
NEW = OLD | {"score_scale": {"kind": "good", "image_zero": 1.5, "pixel_zero": 3.0}}


def test_the_scale_maps_the_good_median_to_0_and_the_threshold_to_1() -> None:
    s = ScoreScale.of(NEW)
    assert (s.kind, s.image(1.5), s.image(2.0), s.image(2.5)) == ("good", 0.0, 1.0, 2.0)
    assert np.allclose(s.pixel(np.array([3.0, 3.5, 4.0])), [0.0, 0.5, 1.0])
    # a threshold factor moves the threshold along the scale: 1.2 = 20 % of zero→threshold beyond it
    s12 = ScoreScale.of(NEW, 1.2)
    assert s12.image_one == pytest.approx(2.1) and s12.pixel_one == pytest.approx(4.2)
    assert s12.image(2.1) == pytest.approx(1.0) and s12.raw_image(0.5) == pytest.approx(1.8)


def test_old_models_keep_the_old_scale_and_say_so() -> None:
    s = ScoreScale.of(OLD, 1.2)  # no score_scale: 0 = a zero score, factor × the raw thresholds, as before
    assert (s.kind, s.image_zero, s.pixel_zero) == ("threshold", 0.0, 0.0)
    assert s.image_one == pytest.approx(2.4) and s.image(1.2) == pytest.approx(0.5)
    bad = OLD | {"score_scale": {"kind": "good", "image_zero": 2.5, "pixel_zero": 3.0}}  # zero above the threshold
    assert ScoreScale.of(bad).kind == "threshold"


def test_a_version_1_station_threshold_keeps_its_raw_image_threshold(exported_memory: Path) -> None:
    """A version 1 station file's recipe threshold multiplies the stored raw threshold: converted to the scale so the
    verdicts do not change; on version 2 the same number is a point on the scale."""
    base = Inspector.load(exported_memory, "onnxruntime")
    thr = float(base.backend.metadata["thresholds"]["image"])
    v1 = Inspector(base.backend, 1.05, threshold_multiple=True)
    v2 = Inspector(base.backend, 1.05)
    assert v1.image_threshold == pytest.approx(1.05 * thr, rel=1e-9)
    assert v2.image_threshold == pytest.approx(base.scale.raw_image(1.05), rel=1e-9)
    assert v1.image_threshold != pytest.approx(v2.image_threshold, rel=1e-6)


def test_good_parts_score_near_0_and_the_overlay_leaves_them_alone(exported_memory: Path, synth_dir: Path) -> None:
    """Measured on these synthetic parts (memory head, 2026-12-07, two banks: the torch and the numpy coreset's first
    centre): the 10 good test parts scored -0.71 median (max 0.89) on the scale; the overlay coloured 1.3 % median
    (max 5.4 %, and 8.3 % with the other bank) of a good part, where the old scale's 0.5 × the threshold coloured
    100 % of every one; with round 4's input blur (σ 0.5 at 128²) and p999 pixel threshold, 1.2 % median (max 6.5 %,
    benchmarks/r4/fixture_blur.py). Bounds: median |u| ≤ 1, coloured median ≤ 3 %, max ≤ 12 % (1.5 × 8.3 %), at most 2 of 10
    good parts at u ≥ 0.5 (a review band of 0.5); the old rule ≥ 90 % (the change is real)."""
    insp = Inspector.load(exported_memory, "onnxruntime")
    assert insp.scale.kind == "good"
    us, shares, old = [], [], []
    for p in sorted((synth_dir / "test" / "good").glob("*.png")):
        r = insp.inspect(cv2.imread(str(p)))
        assert r.score_scale == "good" and r.normalised_score == pytest.approx(insp.scale.image(r.score))
        us.append(r.normalised_score)
        shares.append(coloured_shares(r.anomaly_map[None], r.pixel_threshold, 0.5, r.pixel_zero)[0])
        old.append(coloured_shares(r.anomaly_map[None], r.pixel_threshold, 0.5, 0.0)[0])
        # what the overlay really draws agrees with the share: the frame is unchanged outside the coloured pixels
        drawn = np.any(r.overlay(np.zeros_like(cv2.imread(str(p))), text=()) [..., :] != 0, axis=2)
        assert drawn.mean() <= shares[-1] + 0.15  # + the banner and the colour bar
    print("good parts on the scale:", np.round(us, 2), "coloured:", np.round(shares, 4))
    assert abs(float(np.median(us))) <= 1.0
    assert float(np.median(shares)) <= 0.03 and max(shares) <= 0.12
    assert sum(u >= 0.5 for u in us) <= 2
    assert float(np.median(old)) >= 0.9


def test_defective_parts_are_far_above_1(exported_memory: Path, synth_dir: Path) -> None:
    """Every defective synthetic part is NG; measured u 48.9 at the least (missing) — bound ≥ 5."""
    insp = Inspector.load(exported_memory, "onnxruntime")
    for d in ("crack", "missing", "scratch", "spot"):
        for p in sorted((synth_dir / "test" / d).glob("*.png")):
            r = insp.inspect(cv2.imread(str(p)))
            assert r.ng and r.normalised_score >= 5.0, (d, p.name, r.normalised_score)
