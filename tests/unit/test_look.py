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
