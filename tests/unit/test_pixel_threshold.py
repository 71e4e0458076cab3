"""Round 4 step P (RULE_R4.md): the pixel-threshold candidates — segf1 (the SegF1 optimum on the no-defect check's
synthetic anomalies, among 200 quantiles of the held-out good pixels from p50 to the max) and p999 — their use in
``recalibrate`` (the default unchanged), and the benchmark's rule."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_stpm.common.errors import UserError
from edge_stpm.training import segmetrics
from edge_stpm.runtime.learn import synthetic as synthetic_defects
from edge_stpm.runtime.learn import thresholds

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "r4" / "pixel_threshold.py"


def _good_pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 0.9, (4, 16, 16)).astype(np.float32)


def _masks() -> np.ndarray:
    m = np.zeros((3, 16, 16), bool)
    m[0, 2:6, 3:9] = True
    m[1, 10:12, :] = True
    m[2, 7, 7] = True
    return m


def test_candidates_are_200_quantiles_from_p50_to_the_max() -> None:
    good = _good_pixels()
    c = thresholds.segf1_candidates(good)
    assert c.shape == (200,) and c.dtype == np.float32 and np.all(np.diff(c) >= 0)
    assert c[0] == np.float32(np.median(good)) and c[-1] == good.max()
    assert c[100] == np.float32(np.quantile(good.astype(np.float64), 0.5 + 0.5 * 100 / 199))


def test_a_map_equal_to_the_mask_is_separated_exactly() -> None:
    masks = _masks()
    maps = masks.astype(np.float32)  # 1 on the defect, 0 elsewhere; every candidate lies in [p50, 0.9]
    got = thresholds.segf1_threshold(_good_pixels(), maps, masks)
    assert got["f1"] == 1.0 and got["precision"] == 1.0 and got["recall"] == 1.0
    assert np.array_equal(maps >= np.float32(got["threshold"]), masks)
    assert segmetrics.seg_f1(maps, masks, got["threshold"])["f1"] == 1.0
    assert got["threshold"] == pytest.approx(float(_good_pixels().max()))  # of equal F1, the highest candidate
    assert (got["candidates"], got["images"], got["defect_pixels"]) == (200, 3, int(masks.sum()))


def test_the_chosen_threshold_has_the_highest_segf1_of_all_candidates() -> None:
    rng = np.random.default_rng(3)
    masks = _masks()
    maps = (rng.uniform(0.0, 0.8, masks.shape) + 0.35 * masks + rng.normal(0, 0.1, masks.shape)).astype(np.float32)
    good = _good_pixels(1)
    got = thresholds.segf1_threshold(good, maps, masks)
    cands = thresholds.segf1_candidates(good)
    per = [segmetrics.seg_f1(maps, masks, float(t)) for t in cands]
    curve = thresholds.segf1_curve(maps, masks, cands)
    assert [p["tp"] for p in per] == curve["tp"].tolist() and [p["fp"] for p in per] == curve["fp"].tolist()
    best = max(p["f1"] or 0.0 for p in per)
    assert 0.0 < best < 1.0 and got["f1"] == pytest.approx(best)
    assert segmetrics.seg_f1(maps, masks, got["threshold"])["f1"] == pytest.approx(best)
    assert all(got["f1"] >= (p["f1"] or 0.0) - 1e-12 for p in per)
    assert got["threshold"] in cands.tolist() and cands[0] < got["threshold"] < cands[-1]


def test_p999_is_the_held_out_pixels_999th_percentile_and_leaves_the_image_threshold() -> None:
    rng = np.random.default_rng(0)
    scores, maps = rng.lognormal(0, 0.1, 20), rng.lognormal(0, 0.3, (20, 32, 32)).astype(np.float32)
    base = thresholds.calibrate(scores, maps)
    p2 = thresholds.calibrate(scores, maps, pixel_method="p999")
    assert p2["pixel"] == pytest.approx(float(np.percentile(maps, 99.9)), rel=1e-6) and p2["pixel"] != base["pixel"]
    assert p2["image"] == base["image"] and p2["good_scores"] == base["good_scores"]
    assert (p2["pixel_method"], p2["pixel_k"], p2["method"]) == ("p999", None, "logsigma")
    assert "pixel_method" not in base and base["pixel_k"] == 3.0


def test_segf1_in_calibrate_uses_all_held_out_pixels_and_records_the_choice() -> None:
    rng = np.random.default_rng(1)
    scores, maps = rng.lognormal(0, 0.1, 10), rng.uniform(0, 1, (10, 40, 40)).astype(np.float32)
    masks = _masks()
    syn = np.where(masks, 2.0, rng.uniform(0, 1, masks.shape)).astype(np.float32)
    thr = thresholds.calibrate(scores, maps, pixel_method="segf1", synthetic=(syn, masks), max_pixels=100)
    assert thr["pixel"] == pytest.approx(float(maps.max())) and thr["pixel_segf1"]["f1"] == 1.0
    assert thr["pixel_segf1"]["range"][0] == pytest.approx(float(np.median(maps)))


@pytest.mark.parametrize("call, text", [
    (lambda: thresholds.pixel_threshold(np.ones(4), "p99"), "unknown pixel threshold method"),
    (lambda: thresholds.pixel_threshold(np.ones(4), "segf1"), "needs synthetic anomalies"),
    (lambda: thresholds.pixel_threshold(np.ones(0), "p999"), "no good-image pixels"),
    (lambda: thresholds.segf1_threshold(np.ones(4), np.ones((1, 2, 2)), np.zeros((1, 2, 2), bool)), "no defect"),
    (lambda: thresholds.segf1_curve(np.ones((1, 2, 2)), np.ones((1, 3, 2), bool), np.ones(2)), "differ in shape"),
])
def test_bad_input_is_one_user_error(call, text: str) -> None:
    with pytest.raises(UserError, match=text):
        call()


def test_anomalies_are_exactly_the_images_the_no_defect_check_scores() -> None:
    rng = np.random.default_rng(2)
    good = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    seen: list[np.ndarray] = []

    def infer(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(batch.copy())
        return np.zeros(batch.shape[:3], np.float32), batch.reshape(len(batch), -1).mean(1).astype(np.float32)

    synthetic_defects.proxy_auroc(infer, good, seed=5, batch=8)
    scored = np.concatenate(seen)[len(good):]  # the good images first, then kind by kind
    got = list(synthetic_defects.anomalies(good, 5))
    assert [k for k, _, _ in got] == list(synthetic_defects.KINDS)
    assert np.array_equal(np.concatenate([i for _, i, _ in got]), scored)
    for kind, images, masks in got:
        ref_i, ref_m = synthetic_defects.make(good, kind, 5)
        assert np.array_equal(images, ref_i) and np.array_equal(masks, ref_m) and masks.any()


def test_recalibrate_pixel_methods_change_only_the_pixel_threshold(trained_memory: Path, tmp_path: Path) -> None:
    from edge_stpm.training import checkpoint
    from edge_stpm.training.calibrate import recalibrate

    copies = {n: tmp_path / f"{n}.pt" for n in ("P0", "P1", "P2")}
    for p in copies.values():
        shutil.copy(trained_memory / "model.pt", p)
    assert checkpoint.read(copies["P0"])["thresholds"]["pixel_method"] == "p999"  # the memory head's default
    p0 = recalibrate(copies["P0"], quiet=True, pixel_method="method")
    p1 = recalibrate(copies["P1"], quiet=True, pixel_method="segf1")
    p2 = recalibrate(copies["P2"], quiet=True)  # None: the checkpoint's own (p999)
    assert "pixel_method" not in p0 and p0["pixel_k"] == 3.0 and p0["k"] == 2.0 and p2["pixel_method"] == "p999"
    assert p1["image"] == p0["image"] == p2["image"]
    assert len({p0["pixel"], p1["pixel"], p2["pixel"]}) == 3
    lo, hi = p1["pixel_segf1"]["range"]
    assert lo <= p1["pixel"] <= hi and p1["pixel_segf1"]["images"] == 5 * p0["n_good"]
    stored = checkpoint.read(copies["P1"])
    assert stored["thresholds"]["pixel"] == p1["pixel"] and stored["thresholds"]["pixel_method"] == "segf1"
    assert checkpoint.read(copies["P0"])["thresholds"] == p0
    with pytest.raises(UserError, match="unknown pixel threshold method"):
        recalibrate(copies["P0"], quiet=True, pixel_method="p99")


def _bench():
    spec = importlib.util.spec_from_file_location("pixel_threshold_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _m(segf1: dict[str, float], auroc: dict[str, float], seeds: int = 3) -> dict:
    return {n: {"seeds": list(range(seeds)), "segf1": segf1[n], "image_auroc": auroc[n]} for n in segf1}


def test_the_rule_needs_gain_auroc_and_three_seeds() -> None:
    decide = _bench().decide
    auc = {"P0": 0.9, "P1": 0.9, "P2": 0.9}
    assert decide(_m({"P0": 0.30, "P1": 0.33, "P2": 0.31}, auc))["winner"] == "P1"
    assert decide(_m({"P0": 0.30, "P1": 0.319, "P2": 0.31}, auc))["winner"] == "P0"  # gain < 0.02
    assert decide(_m({"P0": 0.30, "P1": 0.40, "P2": 0.30}, auc | {"P1": 0.894}))["winner"] == "P0"  # AUROC drop
    assert decide(_m({"P0": 0.30, "P1": 0.40, "P2": 0.39}, auc))["winner"] == "P2"  # within 0.02, cheaper
    assert decide(_m({"P0": 0.30, "P1": 0.40, "P2": 0.30}, auc, seeds=2))["winner"] == "P0"  # < 3 seeds


def test_the_cache_runs_the_model_once_per_distinct_batch() -> None:
    calls: list[int] = []

    def infer(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(batch))
        return batch[..., 0].astype(np.float32), batch.reshape(len(batch), -1).max(1).astype(np.float32)

    run = _bench().cached(infer)
    a, b = np.zeros((2, 4, 4, 3), np.uint8), np.ones((2, 4, 4, 3), np.uint8)
    first = run(a)
    run(b)
    again = run(a.copy())
    first[0][:] = 9  # a caller changing its result does not change the cache
    assert calls == [2, 2] and np.array_equal(again[0], a[..., 0]) and np.array_equal(run(a)[0], a[..., 0])
