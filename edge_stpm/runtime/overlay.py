"""What an inspector sees on a frame (uint8 BGR in and out), torch-free.

- The part is shown as it is; colour appears only where the map is near or above the pixel threshold, on the one
  score scale (``contract/scale.py``: 0 = a typical good part's map, 1 = the pixel threshold): from 0.5 — halfway
  from typical good to the threshold — (transparent) through amber at the threshold to red at 2 (``colour_lut``/
  ``alpha_lut``, 256-entry look-up tables indexed by the map on that scale — the same tables a device-side overlay
  can gather from). ``zero`` below is the scale's raw pixel zero (0 on the old scale of earlier models).
- Defect contours only on NG frames; a small colour bar whose 1.0 mark is the threshold.
- An OK/NG/REVIEW banner (the result's own verdict) with the normalised score beside the raw threshold, and HUD
  lines, scaled with the frame so they are legible from 256² to 1080p.
"""
from __future__ import annotations

import cv2
import numpy as np

NEAR = 0.5     # colour starts here on the score scale (0 = typical good, 1 = the pixel threshold)
TOP = 2.0      # full colour here on the score scale
ALPHA = 0.6    # opacity of the colour at and above the threshold
FONT = cv2.FONT_HERSHEY_SIMPLEX
HUD_SHARE = 0.4  # the HUD lines stop at this share of the frame's height (a 128-px part keeps its lower 60 %)
_STOPS = ((NEAR, (0, 230, 255)), (1.0, (0, 140, 255)), (TOP, (0, 0, 230)))  # BGR: yellow → amber → red


def _u(index: np.ndarray) -> np.ndarray:
    """Normalised map value (map / pixel threshold) at the centre of each of the 256 bins over [0, TOP]."""
    return index.astype(np.float32) * (TOP / 255.0)


def colour_lut() -> np.ndarray:
    """``(256, 3)`` uint8 BGR colour per bin of the normalised map over [0, TOP]."""
    u = _u(np.arange(256))
    xs = [s[0] for s in _STOPS]
    return np.stack([np.interp(u, xs, [s[1][c] for s in _STOPS]) for c in range(3)], axis=1).round().astype(np.uint8)


def alpha_lut(alpha: float = ALPHA) -> np.ndarray:
    """``(256,)`` float32 opacity per bin: 0 below NEAR, rising linearly to ``alpha`` at the threshold (1.0)."""
    u = _u(np.arange(256))
    return (np.clip((u - NEAR) / (1.0 - NEAR), 0.0, 1.0) * alpha).astype(np.float32)


_COLOURS = colour_lut()
_COLOURS_CV = _COLOURS.reshape(256, 1, 3)  # cv2.LUT table for a 3-channel image
_ALPHA_U8: dict[float, np.ndarray] = {}  # opacity LUTs as uint8 (0-255), per alpha


def _alpha_u8(alpha: float) -> np.ndarray:
    if alpha not in _ALPHA_U8:
        _ALPHA_U8[alpha] = np.round(alpha_lut(alpha) * 255).astype(np.uint8)
    return _ALPHA_U8[alpha]


def index_scale(pixel_threshold: float, zero: float = 0.0) -> float:
    """Factor from map value above the scale's zero to table bin: 255 / (TOP · (pixel threshold − zero))."""
    return 255.0 / (TOP * (float(pixel_threshold) - float(zero)))


def map_index(amap: np.ndarray, pixel_threshold: float, zero: float = 0.0) -> np.ndarray:
    """uint8 bin index of a float map ``(H, W)``: round((map − zero) · ``index_scale``), saturated to [0, 255]."""
    a = np.asarray(amap, np.float32)
    s = index_scale(pixel_threshold, zero)
    if zero == 0.0:  # maps are ≥ 0: one OpenCV pass
        return cv2.convertScaleAbs(a, alpha=s)
    v = a - np.float32(zero)
    return cv2.convertScaleAbs(np.maximum(v, 0.0, out=v), alpha=s)


def region_mask(amap: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """uint8 {0,255} ``(H, W)`` of the pixels at or above the pixel threshold."""
    return (amap >= pixel_threshold).astype(np.uint8) * 255


def heatmap_overlay(frame: np.ndarray, amap: np.ndarray, pixel_threshold: float, alpha: float = ALPHA,
                    contours: bool = False, zero: float = 0.0) -> np.ndarray:
    """The frame with colour only where the map (resized to the frame) is near or above the pixel threshold (from
    ``NEAR`` on the scale whose raw zero is ``zero``); ``contours`` outlines the above-threshold regions (pass the
    NG verdict)."""
    h, w = frame.shape[:2]
    if amap.shape != (h, w):
        amap = cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
    idx = map_index(amap, pixel_threshold, zero)
    a8 = cv2.LUT(idx, _alpha_u8(alpha))
    if not a8.any():  # nothing near the threshold (most good parts): the frame as it is
        out = frame.copy()
    else:  # blend only the rows that carry colour, with OpenCV's per-pixel linear blend
        rows = np.flatnonzero(a8.any(axis=1))
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        out = frame.copy()
        wa = a8[r0:r1].astype(np.float32) * (1.0 / 255.0)
        colour = cv2.LUT(cv2.merge([idx[r0:r1]] * 3), _COLOURS_CV)
        out[r0:r1] = cv2.blendLinear(colour, frame[r0:r1], wa, 1.0 - wa)
    if contours:
        draw_contours(out, region_mask(amap, pixel_threshold), (255, 255, 255), max(1, round(h / 360)))
    return out


def draw_contours(img: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], thickness: int = 1) -> np.ndarray:
    """Outline the regions of a mask ``(H, W)`` on ``img`` in place."""
    m: np.ndarray = mask.astype(np.uint8)
    if m.shape != img.shape[:2]:
        m = cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
    cnts, _ = cv2.findContours((m > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, cnts, -1, colour, thickness)
    return img


def _text(img: np.ndarray, text: str, org: tuple[int, int], px: int, colour: tuple[int, int, int]) -> None:
    """Text ``px`` pixels tall on a dark box (legible on any part), shrunk to fit inside the frame's width.

    (A thicker dark copy of the text as outline does not work with OpenCV's Hershey fonts: the advance grows with
    the stroke thickness, so outline and text drift apart letter by letter.)"""
    scale = cv2.getFontScaleFromHeight(FONT, max(8, px), 1)
    th = max(1, round(px / 12))
    (tw, tht), base = cv2.getTextSize(text, FONT, scale, th)
    room = img.shape[1] - org[0] - 4
    if tw > room > 0:
        scale *= room / tw
        (tw, tht), base = cv2.getTextSize(text, FONT, scale, th)
    pad = max(1, round(px / 8))
    cv2.rectangle(img, (org[0] - pad, org[1] - tht - pad), (org[0] + tw + pad, org[1] + base), (0, 0, 0), -1)
    cv2.putText(img, text, org, FONT, scale, colour, th, cv2.LINE_AA)


def text_height(img: np.ndarray) -> int:
    """Banner text height in pixels for a frame: ~7 % of the short side, at least 14 px (legible at 256²)."""
    return max(14, round(0.07 * min(img.shape[:2])))


def colour_bar(img: np.ndarray) -> np.ndarray:
    """A small vertical colour bar at the right edge, normalised to the pixel threshold, marked 0.5 / 1.0 / 2.0
    (1.0 = the threshold), in place."""
    h, w = img.shape[:2]
    bh, bw = max(48, round(0.3 * h)), max(6, round(0.02 * w))
    px = max(10, round(0.55 * text_height(img)))
    label_w = cv2.getTextSize("2.0", FONT, cv2.getFontScaleFromHeight(FONT, px, 1), 1)[0][0] + 6
    x1 = w - 6 - label_w
    x0, y0 = x1 - bw, h - 8 - bh
    if x0 < 4 or y0 < 4:  # a frame too small for the bar (a tiny ROI or image): no bar rather than a broken one
        return img
    idx = np.linspace(255, round(NEAR / TOP * 255), bh).astype(np.uint8)  # top = 2.0, bottom = 0.5
    img[y0 : y0 + bh, x0:x1] = _COLOURS[idx][:, None, :]
    cv2.rectangle(img, (x0 - 1, y0 - 1), (x1, y0 + bh), (0, 0, 0), 1)
    for val in (NEAR, 1.0, TOP):
        y = y0 + round((TOP - val) / (TOP - NEAR) * (bh - 1))
        cv2.line(img, (x0 - 3, y), (x1 + 2, y), (255, 255, 255) if val == 1.0 else (0, 0, 0), 2 if val == 1.0 else 1)
        _text(img, f"{val:.1f}", (x1 + 4, y + px // 2), px, (255, 255, 255))
    return img


VERDICT_COLOURS = {"NG": (0, 0, 255), "REVIEW": (0, 190, 255), "OK": (0, 200, 0)}  # BGR: red, amber, green


def banner_head(ng: bool, norm_score: float, verdict: str | None = None) -> tuple[str, tuple[int, int, int]]:
    """The banner's first line and its BGR colour: the verdict (``verdict`` — OK / NG / REVIEW, the result's own —
    or, without it, NG / OK from ``ng``) and the normalised score (1.0 = threshold)."""
    v = verdict if verdict in VERDICT_COLOURS else ("NG" if ng else "OK")
    return f"{v} {norm_score:.2f}", VERDICT_COLOURS[v]


def verdict_banner(img: np.ndarray, ng: bool, norm_score: float, lines: list[str] | tuple[str, ...] = (),
                   threshold: float | None = None, verdict: str | None = None) -> np.ndarray:
    """The verdict (``verdict`` OK / NG / REVIEW, else from ``ng``) with the normalised score (1.0 = threshold) and
    the raw image threshold, then HUD lines, top-left, scaled with the frame, in place."""
    px = text_height(img)
    head, colour = banner_head(ng, norm_score, verdict)
    scale = cv2.getFontScaleFromHeight(FONT, px, 1)
    (tw, _), _ = cv2.getTextSize(head, FONT, scale, max(1, round(px / 12)))
    cv2.rectangle(img, (0, 0), (tw + 2 * round(0.4 * px), round(1.5 * px)), (0, 0, 0), -1)
    cv2.putText(img, head, (round(0.4 * px), round(1.22 * px)), FONT, scale, colour, max(1, round(px / 10)),
                cv2.LINE_AA)
    small = max(11, round(0.6 * px))
    more = ([f"threshold 1.00 = score {threshold:.4g}"] if threshold is not None else []) + list(lines)
    _lines(img, more, round(1.5 * px) + small + 4, round(0.4 * px), small)
    return img


def _lines(img: np.ndarray, lines: list[str], y: int, x: int, px: int) -> None:
    """HUD lines under the banner, as many as fit in the top ``HUD_SHARE`` of the frame (a small part's frame keeps
    its picture: the lines that do not fit are left out, the banner itself stays)."""
    for line in lines:
        if y > HUD_SHARE * img.shape[0]:
            return
        _text(img, line, (x, y), px, (255, 255, 255))
        y += px + 5


def no_model_banner(frame: np.ndarray, lines: list[str] | tuple[str, ...] = ()) -> np.ndarray:
    """A frame judged by no model (a station recipe that has none yet): the frame as it is, a grey banner that says
    so, then HUD lines."""
    out = frame.copy()
    px = text_height(out)
    head = "NO MODEL YET"
    scale = cv2.getFontScaleFromHeight(FONT, px, 1)
    (tw, _), _ = cv2.getTextSize(head, FONT, scale, max(1, round(px / 12)))
    cv2.rectangle(out, (0, 0), (tw + 2 * round(0.4 * px), round(1.5 * px)), (0, 0, 0), -1)
    cv2.putText(out, head, (round(0.4 * px), round(1.22 * px)), FONT, scale, (200, 200, 200),
                max(1, round(px / 10)), cv2.LINE_AA)
    small = max(11, round(0.6 * px))
    _lines(out, ["collect good parts and fit a model on the Recipes page", *lines], round(1.5 * px) + small + 4,
           round(0.4 * px), small)
    return out


def inspection_overlay(frame: np.ndarray, amap: np.ndarray, pixel_threshold: float, ng: bool, norm_score: float,
                       image_threshold: float | None = None, lines: list[str] | tuple[str, ...] = (),
                       alpha: float = ALPHA, verdict: str | None = None, zero: float = 0.0) -> np.ndarray:
    """Everything together: colour near/above threshold, contours on NG only, colour bar, banner (``verdict`` as
    ``verdict_banner``) and HUD (the overlay has the frame's size; on a frame too small for the colour bar the bar
    is left out)."""
    out = heatmap_overlay(frame, amap, pixel_threshold, alpha, contours=ng, zero=zero)
    colour_bar(out)
    return verdict_banner(out, ng, norm_score, lines, image_threshold, verdict)
