"""A new look (runtime/learn/look.py): the tone curve and the defocus that carry old images to new ones are
recovered from the images alone."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def _parts(synth_dir: Path) -> np.ndarray:
    return np.stack([cv2.resize(cv2.imread(str(p)), (128, 128))
                     for p in sorted((synth_dir / "train" / "good").glob("*.png"))[:24]])


def test_a_gamma_and_a_blur_are_recovered(synth_dir: Path) -> None:
    """Other parts darkened (gamma 1.6), then blurred (σ 1.5 px), as the drift benchmark does it: over the grey
    levels the old parts use (2nd to 98th percentile) the estimated tone curve is within 8 levels of the gamma's, the
    σ within 0.25 px, and the carried old parts are as sharp as the new ones within 10 % (measured 2026-12-07: 6
    levels at most — the tone curve is fitted after the blur, the drift applied it before —, σ 1.5, sharpness 0.96). The estimate sees other parts than the drifted ones (the first 12 → the last 12)."""
    from edge_stpm.runtime.learn.look import blur, estimate, sharpness, tone

    parts = _parts(synth_dir)
    gamma = np.repeat((255.0 * (np.arange(256) / 255.0) ** 1.6).round().astype(np.uint8)[:, None], 3, 1)
    old, new = parts[:12], blur(tone(parts[12:], gamma), 1.5)
    look = estimate(old, new)
    lo, hi = np.percentile(old, [2, 98]).astype(int)
    assert np.abs(look.lut[lo:hi].astype(int) - gamma[lo:hi].astype(int)).max() <= 8
    assert abs(look.sigma - 1.5) <= 0.25
    assert abs(sharpness(look.apply(old)) / sharpness(new) - 1) <= 0.1


def test_no_drift_is_no_look(synth_dir: Path) -> None:
    from edge_stpm.runtime.learn.look import estimate

    parts = _parts(synth_dir)
    look = estimate(parts[:12], parts[12:])
    assert look.sigma <= 0.25
    lo, hi = np.percentile(parts, [2, 98]).astype(int)
    assert np.abs(look.lut[lo:hi].astype(int) - np.arange(lo, hi)[:, None]).max() <= 3


def test_the_look_is_estimated_within_a_pixel_budget(synth_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Camera-sized frames: the look is estimated on at most LOOK_PIXELS of decoded images (a seeded sample; all of
    them when they fit), and the carried images come out at the model's size, one per training image."""
    from edge_stpm.runtime.learn import update as upd

    paths = sorted((synth_dir / "train" / "good").glob("*.png"))[:24]
    h, w = cv2.imread(str(paths[0])).shape[:2]
    monkeypatch.setattr(upd, "LOOK_PIXELS", 5 * h * w)
    few = upd._sample(paths, 0)
    assert len(few) == 5 and [im.shape for im in few] == [(h, w, 3)] * 5
    assert [im.tobytes() for im in upd._sample(paths, 0)] == [im.tobytes() for im in few]  # seeded
    monkeypatch.setattr(upd, "LOOK_PIXELS", 10**12)
    assert len(upd._sample(paths, 0)) == 24
    carried, val, look = upd.carry_look([str(p) for p in paths[:12]], paths[12:], paths[:2], 64, "stretch", None)
    assert carried.shape == (12, 64, 64, 3) and val.shape == (2, 64, 64, 3) and look.sigma <= 0.25
