"""Drawing on frames: heatmap, thresholded-region contours, verdict and timing text (uint8 BGR in and out)."""
from __future__ import annotations

import cv2
import numpy as np


def heat_colours(amap: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """Colour-map an anomaly map ``(H, W)``: 0 → blue, the pixel threshold → mid-scale, 2× → red."""
    heat = np.clip(amap / (2.0 * pixel_threshold) * 255.0, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(heat, cv2.COLORMAP_JET)


def region_mask(amap: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """uint8 {0,255} ``(H, W)`` of the pixels at or above the pixel threshold."""
    return (amap >= pixel_threshold).astype(np.uint8) * 255


def heatmap_overlay(frame: np.ndarray, amap: np.ndarray, pixel_threshold: float, alpha: float = 0.45,
                    contours: bool = True) -> np.ndarray:
    """Blend the heatmap over ``frame`` (resized to the frame) and outline the thresholded region in white."""
    h, w = frame.shape[:2]
    if amap.shape != (h, w):
        amap = cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
    out = cv2.addWeighted(frame, 1.0 - alpha, heat_colours(amap, pixel_threshold), alpha, 0.0)
    if contours:
        draw_contours(out, region_mask(amap, pixel_threshold), (255, 255, 255))
    return out


def draw_contours(img: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], thickness: int = 1) -> np.ndarray:
    """Outline the regions of a mask ``(H, W)`` on ``img`` in place."""
    m = mask.astype(np.uint8)
    if m.shape != img.shape[:2]:
        m = cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
    cnts, _ = cv2.findContours((m > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, cnts, -1, colour, thickness)
    return img


def verdict_banner(img: np.ndarray, ng: bool, norm_score: float, lines: list[str]) -> np.ndarray:
    """OK/NG with the normalised score (1.0 = threshold) and extra text lines, top-left, in place."""
    colour = (0, 0, 255) if ng else (0, 200, 0)
    scale = max(0.6, img.shape[1] / 640.0)
    text = f"{'NG' if ng else 'OK'} {norm_score:.2f}"
    cv2.rectangle(img, (0, 0), (int(150 * scale), int(34 * scale)), (0, 0, 0), -1)
    cv2.putText(img, text, (int(6 * scale), int(26 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.9 * scale, colour,
                max(1, int(2 * scale)), cv2.LINE_AA)
    for i, line in enumerate(lines):
        y = int((34 + 16 * (i + 1)) * scale)
        cv2.putText(img, line, (int(6 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, (0, 0, 0),
                    max(2, int(3 * scale)), cv2.LINE_AA)
        cv2.putText(img, line, (int(6 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, (255, 255, 255),
                    1, cv2.LINE_AA)
    return img
