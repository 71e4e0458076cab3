"""Where-the-defect-is metrics (segmetrics, evaluate.aupro_at / where_metrics) against hand-computed tiny cases."""
from __future__ import annotations

import numpy as np
import pytest

from edge_stpm.runtime import overlay
from edge_stpm.training import metrics, segmetrics


def square(h: int = 32, w: int = 32, top: int = 10, left: int = 10, side: int = 10) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[top : top + side, left : left + side] = True
    return m


def test_seg_f1_hand_counts() -> None:
    # image 0 (defective): 2 true pixels, one found, one false pixel; image 1 (good): one false pixel
    maps = np.array([[[0.9, 0.1], [0.8, 0.0]], [[0.0, 0.7], [0.2, 0.1]]], np.float32)
    masks = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]], bool)
    r = segmetrics.seg_f1(maps, masks, 0.5)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 2, 1)
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(0.5)
    assert r["f1"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))  # 0.4 = harmonic mean of 1/3 and 1/2
    assert segmetrics.seg_f1(maps, masks, 1.0)["precision"] is None  # nothing predicted: undefined, not 0 or 1


def test_map_equal_to_mask_is_perfect() -> None:
    mask = square()
    amap = mask.astype(np.float32)
    assert segmetrics.seg_f1(amap[None], mask[None], 0.5)["f1"] == 1.0
    assert segmetrics.region_figures(amap, mask, 0.5) == {"area_ratio": 1.0, "iou": 1.0, "missed": False}


@pytest.mark.parametrize("k", [1, 3, 7])
def test_shifted_map_gives_exact_iou(k: int) -> None:
    mask = square()
    amap = np.roll(mask, k, axis=1).astype(np.float32)  # the same 10×10 square, k pixels to the right
    inter = 10 * (10 - k)
    fig = segmetrics.region_figures(amap, mask, 0.5)
    assert fig["iou"] == pytest.approx(inter / (200 - inter))
    assert fig["area_ratio"] == 1.0
    f1 = segmetrics.seg_f1(amap[None], mask[None], 0.5)
    assert f1["precision"] == f1["recall"] == f1["f1"] == pytest.approx(inter / 100)


def test_region_touching_leaves_out_a_far_blob_all_counts_it() -> None:
    mask = square()                       # 100 px true
    amap = np.zeros((32, 32), np.float32)
    amap[8:22, 8:22] = 1.0                # 14×14 = 196 px around the defect (touches it)
    amap[28:31, 28:31] = 1.0              # a 3×3 blob far away (9 px)
    touch = segmetrics.region_figures(amap, mask, 0.5, "touching")
    every = segmetrics.region_figures(amap, mask, 0.5, "all")
    assert touch["area_ratio"] == pytest.approx(1.96) and touch["iou"] == pytest.approx(100 / 196)
    assert every["area_ratio"] == pytest.approx(2.05) and every["iou"] == pytest.approx(100 / 205)
    with pytest.raises(ValueError):
        segmetrics.predicted_region(amap >= 0.5, mask, "nearest")


def test_thin_defect_widened_by_a_stride() -> None:
    mask = np.zeros((24, 24), bool)
    mask[10, 5:15] = True                 # a 1-px line, 10 px
    amap = np.zeros((24, 24), np.float32)
    amap[9:12, 5:15] = 1.0                # the map draws it 3 px wide: 30 px
    plain = segmetrics.region_figures(amap, mask, 0.5)
    assert plain["area_ratio"] == pytest.approx(3.0) and plain["iou"] == pytest.approx(1 / 3)
    wide = segmetrics.region_figures(amap, mask, 0.5, widen_px=1)  # mask → rows 9-11, cols 4-15: 36 px
    assert segmetrics.widen(mask, 1).sum() == 36
    assert wide["area_ratio"] == pytest.approx(30 / 36) and wide["iou"] == pytest.approx(30 / 36)


def test_missed_and_empty_masks_in_the_medians() -> None:
    mask = square()
    hit = mask.astype(np.float32)                          # ratio 1, IoU 1
    wide = np.zeros((32, 32), np.float32)
    wide[5:25, 5:25] = 1.0                                 # ratio 4, IoU 0.25
    miss = np.zeros((32, 32), np.float32)
    miss[0:3, 0:3] = 1.0                                   # nothing on the defect: counts 0, 0
    maps = np.stack([hit, wide, miss, hit, hit])
    masks = np.stack([mask, mask, mask, np.zeros_like(mask), mask])
    defects = np.array(["crack", "crack", "crack", "uneven", "fray"])
    r = segmetrics.region_medians(maps, masks, defects, 0.5)
    assert r["crack"] == {"n": 3, "no_mask": 0, "missed": 1, "area_ratio_median": 1.0, "iou_median": 0.25}
    assert segmetrics.region_figures(miss, mask, 0.5, "all") == {"area_ratio": 0.0, "iou": 0.0, "missed": True}
    assert r["uneven"] == {"n": 0, "no_mask": 1, "missed": 0, "area_ratio_median": None, "iou_median": None}
    assert r["fray"]["iou_median"] == 1.0


def test_crack_medians_with_two_misses() -> None:
    mask = square()
    wide = np.zeros((32, 32), np.float32)
    wide[5:25, 5:25] = 1.0
    miss = np.zeros((32, 32), np.float32)
    r = segmetrics.region_medians(np.stack([wide, miss, miss]), np.stack([mask] * 3), np.array(["c"] * 3), 0.5)
    assert r["c"]["missed"] == 2 and r["c"]["area_ratio_median"] == 0.0 and r["c"]["iou_median"] == 0.0
    r = segmetrics.region_medians(np.stack([wide, wide, miss]), np.stack([mask] * 3), np.array(["c"] * 3), 0.5)
    assert r["c"]["area_ratio_median"] == pytest.approx(4.0) and r["c"]["iou_median"] == pytest.approx(0.25)


def test_coloured_shares_and_summary() -> None:
    maps = np.zeros((4, 10, 10), np.float32)
    maps[0, :1] = 1.0      # 10 %
    maps[1, :5] = 1.0      # 50 %
    maps[2, :2] = 0.9      # 20 % of the pixels at 0.9: under 0.5 × 2.0, over 0.45 × 2.0
    maps[3] = 2.0          # 100 %
    s = segmetrics.coloured_shares(maps, 2.0)            # colour from 0.5 × 2.0 = 1.0
    assert s.tolist() == pytest.approx([0.1, 0.5, 0.0, 1.0])
    summ = segmetrics.coloured_summary(maps, 2.0, fractions=(0.5, 0.45))
    assert summ["0.5"]["median"] == pytest.approx(0.3) and summ["0.5"]["n"] == 4
    assert summ["0.5"]["p90"] == pytest.approx(np.percentile([0.1, 0.5, 0.0, 1.0], 90))
    assert summ["0.45"]["median"] == pytest.approx(0.35)   # 0.9 ≥ 0.45 × 2: image 2 now 20 %


def test_coloured_share_is_what_the_overlay_colours() -> None:
    """The rule map ≥ NEAR × pixel threshold against the pixels ``heatmap_overlay`` really changes on a black frame
    (values in the 0.4 % half-bin just below 0.5× left out: there the overlay's 256-bin table already colours)."""
    rng = np.random.default_rng(0)
    thr = 3.0
    amap = rng.uniform(0, 2.5 * thr, (64, 64)).astype(np.float32)
    band = (amap >= 0.497 * thr) & (amap < 0.5 * thr)
    amap[band] = 0.4 * thr
    drawn = overlay.heatmap_overlay(np.zeros((64, 64, 3), np.uint8), amap, thr).any(axis=2)
    assert drawn.mean() == pytest.approx(segmetrics.coloured_shares(amap, thr, overlay.NEAR)[0])
    assert np.array_equal(drawn, amap >= overlay.NEAR * thr)


def test_aupro_005_hand_computed() -> None:
    # one row: 2 defect pixels (one region) scored 10 and 5; 40 normal pixels: one at 7, one at 3, 38 at 0
    maps = np.zeros((1, 1, 42), np.float32)
    masks = np.zeros((1, 1, 42), bool)
    masks[0, 0, :2] = True
    maps[0, 0, :4] = [10, 5, 7, 3]
    # curve (fpr, pro): (0,0) (0,.5) (.025,.5) (.025,1) (.05,1) (1,1)
    assert metrics.aupro(maps, masks, 0.05) == pytest.approx((0.025 * 0.5 + 0.025 * 1.0) / 0.05)  # 0.75
    assert metrics.aupro(maps, masks, 0.3) == pytest.approx((0.0125 + 0.025 + 0.25) / 0.3)
    from edge_stpm.training.evaluate import aupro_at

    assert aupro_at(maps, masks) == pytest.approx({"aupro": 0.2875 / 0.3, "aupro_005": 0.75})


def test_aupro_at_matches_metrics_aupro_and_handles_no_defect() -> None:
    from edge_stpm.training.evaluate import aupro_at

    rng = np.random.default_rng(3)
    maps = rng.random((3, 16, 16)).astype(np.float32)
    masks = np.zeros((3, 16, 16), bool)
    masks[0, 2:6, 2:6] = masks[1, 9:11, 3:12] = True
    maps[masks] += 0.3
    r = aupro_at(maps, masks, {"a": 0.3, "b": 0.05, "c": 0.01})
    assert r == {"a": metrics.aupro(maps, masks, 0.3), "b": metrics.aupro(maps, masks, 0.05),
                 "c": metrics.aupro(maps, masks, 0.01)}
    assert r["b"] != r["a"]
    assert aupro_at(maps, np.zeros_like(masks)) == {"aupro": None, "aupro_005": None}


def test_where_metrics_and_report_lines() -> None:
    from edge_stpm.training.evaluate import compute_metrics, markdown, summary_lines, where_metrics

    mask = square()
    maps = np.stack([mask.astype(np.float32), np.roll(mask, 3, axis=1).astype(np.float32),
                     np.zeros((32, 32), np.float32), np.full((32, 32), 0.6, np.float32)])
    masks = np.stack([mask, mask, np.zeros_like(mask), np.zeros_like(mask)])
    defects = np.array(["crack", "crack", "good", "good"])
    labels = np.array([1, 1, 0, 0])
    m = compute_metrics(maps, np.array([1.0, 0.9, 0.1, 0.2]), labels, masks, defects, pixel_threshold=0.5)
    assert m["overall"]["segf1"]["tp"] == 170 and m["overall"]["segf1"]["fp"] == 30 + 1024
    assert "aupro_005" in m["per_defect"]["crack"] and "segf1" in m["per_defect"]["crack"]
    w = where_metrics(maps, masks, defects, 0.5)
    t = w["regions"]["touching"]["crack"]
    assert t["n"] == 2 and t["iou_median"] == pytest.approx((1.0 + 70 / 130) / 2)
    assert w["good_coloured"]["0.5"]["median"] == pytest.approx(0.5)  # one good image all coloured, one none
    assert w["regions"]["touching_widened_8px"]["crack"]["area_ratio_median"] < 1.0
    assert "aupro" in compute_metrics(maps, np.ones(4), labels, masks, defects)["overall"]  # exporter's call
    r = {"checkpoint": "x", "data": "d", "backbone": "b", "image_size": 32, "fit": "stretch", "graph": "g",
         "n_images": 4, "tiles": None, **m, "segmentation": w, "thresholds": {"method": "logsigma"},
         "at_stored_threshold": {"threshold": 1.0, "precision": 1, "recall": 1, "f1": 1, "tp": 2, "fp": 0, "fn": 0,
                                 "tn": 2}, "f1_optimal_on_this_set": {}}
    md = markdown(r)
    assert "| crack | 2 | 0 | 1.00× | 0.769 |" in md and "AU-PRO@0.05" in md
    assert any("crack: region / true area 1.00×, IoU 0.769" in line for line in summary_lines(r))
