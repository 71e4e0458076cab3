"""Seeded procedural inspection data in MVTec-AD layout: machined textured surfaces with scratches,
spots, cracks and missing pieces, exact masks, and a short labelled video.

It serves the demo and the fast tests; it is no evidence of accuracy on real parts.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import atomic_path, ensure_dir, write_bytes, write_json

DEFECTS = ("scratch", "spot", "crack", "missing")


@dataclass(frozen=True)
class SynthConfig:
    """Counts and sizes of a synthetic set (pixels; images are square)."""

    size: int = 256
    n_train: int = 80
    n_test_good: int = 16
    n_test_defect: int = 8
    video_frames: int = 120
    video_defect_rate: float = 0.3
    seed: int = 0


def surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """A good part: a machined surface (fine stripes, grain, soft lighting), uint8 BGR ``(size, size, 3)``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(-0.05, 0.05)
    phase = rng.uniform(0, 2 * np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    stripes = 10 * np.sin(2 * np.pi * u / 9.0 + phase) + 4 * np.sin(2 * np.pi * u / 3.7 + 2 * phase)
    grain = cv2.GaussianBlur(rng.normal(0, 14, (size, size)).astype(np.float32), (0, 0), 1.2)
    light = 12 * (xx / size - 0.5) * rng.uniform(-1, 1) + 12 * (yy / size - 0.5) * rng.uniform(-1, 1)
    base = rng.uniform(124, 136)
    gray = base + stripes + grain + light
    tint = np.array([1.0, 0.98, 0.94], np.float32) * rng.uniform(0.99, 1.01, 3).astype(np.float32)
    return np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)


def _scratch(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    s = img.shape[0]
    p0 = rng.uniform(0.15, 0.85, 2) * s
    ang = rng.uniform(0, np.pi)
    length = rng.uniform(0.2, 0.45) * s
    p1 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
    pts = np.stack([p0, p1]).astype(np.int32)
    width = int(rng.integers(2, 4))
    shade = int(rng.choice([25, 230]))
    cv2.line(img, tuple(map(int, pts[0])), tuple(map(int, pts[1])), (shade,) * 3, width, cv2.LINE_8)
    cv2.line(mask, tuple(map(int, pts[0])), tuple(map(int, pts[1])), 255, width, cv2.LINE_8)


def _spot(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    s = img.shape[0]
    c = tuple(int(v) for v in rng.uniform(0.2, 0.8, 2) * s)
    axes = tuple(int(v) for v in rng.uniform(0.03, 0.07, 2) * s)
    ang = float(rng.uniform(0, 180))
    colour = (int(rng.integers(20, 60)), int(rng.integers(40, 80)), int(rng.integers(90, 140)))
    cv2.ellipse(img, c, axes, ang, 0, 360, colour, -1, cv2.LINE_8)
    cv2.ellipse(mask, c, axes, ang, 0, 360, 255, -1, cv2.LINE_8)


def _crack(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    s = img.shape[0]
    p = rng.uniform(0.2, 0.8, 2) * s
    heading = rng.uniform(0, 2 * np.pi)
    pts = [p.copy()]
    for _ in range(int(rng.integers(8, 14))):
        heading += rng.normal(0, 0.5)
        p = np.clip(p + rng.uniform(5, 10) * np.array([np.cos(heading), np.sin(heading)]), 2, s - 3)
        pts.append(p.copy())
    poly = np.array(pts, np.int32).reshape(-1, 1, 2)
    cv2.polylines(img, [poly], False, (15, 15, 15), 2, cv2.LINE_8)
    cv2.polylines(mask, [poly], False, 255, 2, cv2.LINE_8)


def _missing(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    s = img.shape[0]
    corner = int(rng.integers(0, 4))
    r = int(rng.uniform(0.12, 0.22) * s)
    cx, cy = (0 if corner % 2 == 0 else s - 1), (0 if corner < 2 else s - 1)
    tri = np.array([[cx, cy], [abs(cx - r), cy], [cx, abs(cy - int(r * rng.uniform(0.8, 1.3)))]], np.int32)
    cv2.fillPoly(img, [tri], (35, 35, 35))
    cv2.fillPoly(mask, [tri], 255)


PAINTERS = {"scratch": _scratch, "spot": _spot, "crack": _crack, "missing": _missing}


def defective(rng: np.random.Generator, size: int, defect: str) -> tuple[np.ndarray, np.ndarray]:
    """A part with one defect: (uint8 BGR image ``(size, size, 3)``, uint8 mask {0, 255} ``(size, size)``)."""
    img = surface(rng, size)
    mask = np.zeros((size, size), np.uint8)
    PAINTERS[defect](rng, img, mask)
    return img, mask


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise UserError("PNG encoding failed")
    return buf.tobytes()


def generate(out: Path, cfg: SynthConfig = SynthConfig()) -> dict[str, int]:
    """Write ``out/train/good``, ``out/test/<type>``, ``out/ground_truth/<type>``, ``out/video.avi`` and
    ``out/video_labels.csv``; returns the counts written."""
    out = ensure_dir(Path(out))
    if cfg.size < 64:
        raise UserError("synthetic images must be at least 64 pixels")
    rng = np.random.default_rng(cfg.seed)
    counts: dict[str, int] = {}
    for i in range(cfg.n_train):
        write_bytes(out / "train" / "good" / f"{i:03d}.png", _png(surface(rng, cfg.size)))
    counts["train/good"] = cfg.n_train
    for i in range(cfg.n_test_good):
        write_bytes(out / "test" / "good" / f"{i:03d}.png", _png(surface(rng, cfg.size)))
    counts["test/good"] = cfg.n_test_good
    for d in DEFECTS:
        for i in range(cfg.n_test_defect):
            img, mask = defective(rng, cfg.size, d)
            write_bytes(out / "test" / d / f"{i:03d}.png", _png(img))
            write_bytes(out / "ground_truth" / d / f"{i:03d}_mask.png", _png(mask))
        counts[f"test/{d}"] = cfg.n_test_defect
    counts["video_frames"] = write_video(out / "video.avi", out / "video_labels.csv", cfg, rng)
    write_json(out / "synth.json", {"config": cfg.__dict__, "counts": counts,
                                    "note": "procedural data for demos and tests; not evidence of accuracy"})
    return counts


def write_video(video: Path, labels: Path, cfg: SynthConfig, rng: np.random.Generator) -> int:
    """A lossless (FFV1; MJPEG where unavailable) video of good and defective parts (defects in runs of 3 frames) and a CSV frame,label,defect."""
    rows = []
    frame_labels: list[str] = []
    while len(frame_labels) < cfg.video_frames:
        if rng.uniform() < cfg.video_defect_rate / 3 and len(frame_labels) >= 3:
            frame_labels += [str(rng.choice(DEFECTS))] * 3
        else:
            frame_labels.append("good")
    frame_labels = frame_labels[: cfg.video_frames]
    with atomic_path(video) as tmp:
        tmp_avi = tmp.with_suffix(".avi")
        writer = cv2.VideoWriter(str(tmp_avi), cv2.VideoWriter_fourcc(*"FFV1"), 15.0, (cfg.size, cfg.size))
        if not writer.isOpened():  # lossless FFV1 needs OpenCV's FFmpeg backend; MJPEG is always there
            writer = cv2.VideoWriter(str(tmp_avi), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (cfg.size, cfg.size))
        if not writer.isOpened():
            raise UserError("OpenCV cannot write AVI video here")
        for i, lab in enumerate(frame_labels):
            img = surface(rng, cfg.size) if lab == "good" else defective(rng, cfg.size, lab)[0]
            writer.write(img)
            rows.append((i, int(lab != "good"), lab))
        writer.release()
        tmp_avi.replace(tmp)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["frame", "label", "defect"])
    w.writerows(rows)
    write_bytes(labels, buf.getvalue().encode())
    return len(frame_labels)
