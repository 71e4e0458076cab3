"""The device frame path: one graph from the camera's uint8 frame to the finished overlay.

``FramePipeline`` wraps the inspection pipeline for one camera resolution (static per build): the frame is cast
once, fitted to the model input (pad / stretch / crop, as ``data.fit_image``), inspected, the map is taken back to
the frame (as ``data.unfit_map``) and coloured and blended exactly like the host overlay (``runtime/overlay.py``: the same
256-entry colour and opacity tables, gathered by the map normalised to the pixel threshold). Outputs: the map at
model resolution, the score and the overlaid frame (uint8 BGR). The same module runs eagerly in PyTorch (CPU,
CUDA graph) and exports to ONNX for ONNX Runtime and TensorRT (uint8 only at the inputs/outputs, opset 17).

Contours, the colour bar and the banner stay on the host (OpenCV), drawn only on frames that are shown or NG.

Fitting is OpenCV's INTER_AREA exactly (its per-axis weights, read off ``cv2.resize`` when the graph is built,
applied as constant Gather + Mul + ReduceSum, rounded as the host's uint8 image is): TensorRT has no area resize.
Mapping back is bilinear with half-pixel centres, as ``cv2.INTER_LINEAR``.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_stpm.common.images import FIT_MODES
from edge_stpm.runtime import overlay as ov
from edge_stpm.training.model import InspectionPipeline


def area_taps(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA resampling of an axis of length ``n`` to ``m`` as taps: indices ``(m, K)`` int32 and
    weights ``(m, K)`` float32 (read off ``cv2.resize`` of the identity, so they are OpenCV's own, K ≤ ⌈n/m⌉+1)."""
    a = cv2.resize(np.eye(n, dtype=np.float32), (m, n), interpolation=cv2.INTER_AREA).T  # (m, n)
    k = int((a != 0).sum(1).max())
    idx = np.zeros((m, k), np.int32)
    w = np.zeros((m, k), np.float32)
    for i in range(m):
        nz = np.flatnonzero(a[i])
        idx[i, : len(nz)], w[i, : len(nz)] = nz, a[i, nz]
    return idx, w


class AreaResize(nn.Module):
    """``cv2.resize(img, (w, h), INTER_AREA)`` of a uint8 image as graph ops: per axis and tap a Gather of constant
    indices times a constant weight, summed tap by tap (plain element-wise ops, fast everywhere), then Round: float
    NHWC ``(1, H, W, 3)`` → ``(1, h, w, 3)`` holding the same integers. Columns first, then rows, taps in ascending
    order — OpenCV's order, so sums of halves land on the same side of .5 as OpenCV's."""

    def __init__(self, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> None:
        super().__init__()
        (ih, wh), (iw, ww) = area_taps(src_hw[0], dst_hw[0]), area_taps(src_hw[1], dst_hw[1])
        self.kh, self.kw = ih.shape[1], iw.shape[1]
        for k in range(self.kh):
            self.register_buffer(f"idx_h{k}", torch.from_numpy(ih[:, k].copy()), persistent=False)
            self.register_buffer(f"w_h{k}", torch.from_numpy(wh[:, k].reshape(1, -1, 1, 1).copy()), persistent=False)
        for k in range(self.kw):
            self.register_buffer(f"idx_w{k}", torch.from_numpy(iw[:, k].copy()), persistent=False)
            # weights repeated over the 3 channels: a same-shape trailing block, so runtimes broadcast over rows fast
            self.register_buffer(f"w_w{k}", torch.from_numpy(np.repeat(ww[:, k].reshape(1, 1, -1, 1), 3, axis=3)),
                                 persistent=False)

    def _axis(self, x: torch.Tensor, axis: int, name: str, taps: int) -> torch.Tensor:
        out = None
        for k in range(taps):
            term = torch.index_select(x, axis, getattr(self, f"idx_{name}{k}")) * getattr(self, f"w_{name}{k}")
            out = term if out is None else out + term
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(self._axis(self._axis(x, 2, "w", self.kw), 1, "h", self.kh))


def _reflect_index(n: int, before: int, after: int) -> torch.Tensor:
    """Indices of a BORDER_REFLECT_101 pad of a length-``n`` axis: ``before`` + n + ``after`` entries."""
    idx = np.arange(-before, n + after)
    period = 2 * (n - 1) if n > 1 else 1
    idx = np.abs(np.mod(idx, period)) if n > 1 else np.zeros_like(idx)
    idx = np.where(idx >= n, period - idx, idx)
    return torch.from_numpy(idx.astype(np.int32))


def overlay_tables(alpha: float = ov.ALPHA) -> tuple[torch.Tensor, torch.Tensor]:
    """The host overlay's tables as ``(256, 3)`` BGR colour and ``(256, 3)`` opacity (repeated per channel, so the
    blend is element-wise), float32; the opacity rounded to 1/255 as the host's uint8 table is."""
    a = np.round(ov.alpha_lut(alpha) * 255.0) / 255.0
    return (torch.from_numpy(ov.colour_lut().astype(np.float32)),
            torch.from_numpy(np.repeat(a.astype(np.float32).reshape(256, 1), 3, axis=1)))


class FramePipeline(nn.Module):
    """uint8 BGR frame ``(1, H, W, 3)`` + index scale ``(1,)`` (= ``overlay.index_scale(pixel threshold, zero)``) →
    (map ``(1, 1, S, S)`` f32, score ``(1,)`` f32, overlay ``(1, H, W, 3)`` uint8). ``pixel_zero``: the score scale's
    raw pixel zero (``contract/scale.py``), a constant of the graph (0: the old scale, no subtraction)."""

    def __init__(self, pipe: InspectionPipeline | nn.Module, frame_hw: tuple[int, int], fit: str, alpha: float = ov.ALPHA,
                 pixel_zero: float = 0.0) -> None:
        super().__init__()
        self.pixel_zero = float(pixel_zero)
        if fit not in FIT_MODES:
            raise ValueError(f"unknown fit mode {fit!r}")
        self.pipe = pipe
        self.h, self.w = int(frame_hw[0]), int(frame_hw[1])
        self.size = s = int(pipe.image_size)
        h, w = self.h, self.w
        self.fit = "stretch" if h == w else fit
        colour, opacity = overlay_tables(alpha)
        self.register_buffer("colour", colour, persistent=False)
        self.register_buffer("opacity", opacity, persistent=False)
        if self.fit == "pad":
            scale = s / max(h, w)
            self.nh, self.nw = max(1, round(h * scale)), max(1, round(w * scale))
            self.top, self.left = (s - self.nh) // 2, (s - self.nw) // 2
            self.resize = AreaResize((h, w), (self.nh, self.nw))
            self.register_buffer("rows", _reflect_index(self.nh, self.top, s - self.nh - self.top), persistent=False)
            self.register_buffer("cols", _reflect_index(self.nw, self.left, s - self.nw - self.left), persistent=False)
        elif self.fit == "crop":
            self.side = min(h, w)
            self.y0, self.x0 = (h - self.side) // 2, (w - self.side) // 2
            self.resize = AreaResize((self.side, self.side), (s, s))
        else:
            self.resize = AreaResize((h, w), (s, s))

    def fitted(self, x: torch.Tensor) -> torch.Tensor:
        """Float BGR NHWC frame → float BGR NHWC ``(1, S, S, 3)``, as ``data.fit_image``."""
        if self.fit == "stretch":
            return self.resize(x)
        if self.fit == "crop":
            return self.resize(x[:, self.y0 : self.y0 + self.side, self.x0 : self.x0 + self.side])
        small = self.resize(x)
        return torch.index_select(torch.index_select(small, 1, self.rows), 2, self.cols)

    def unfitted(self, amap: torch.Tensor) -> torch.Tensor:
        """Map ``(1, 1, S, S)`` → ``(1, 1, H, W)``, as ``data.unfit_map`` (bilinear, half-pixel)."""
        h, w = self.h, self.w
        if self.fit == "stretch":
            return F.interpolate(amap, size=(h, w), mode="bilinear", align_corners=False)
        if self.fit == "crop":
            m = F.interpolate(amap, size=(self.side, self.side), mode="bilinear", align_corners=False)
            return F.pad(m, (self.x0, w - self.side - self.x0, self.y0, h - self.side - self.y0))
        m = amap[:, :, self.top : self.top + self.nh, self.left : self.left + self.nw]
        return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)

    def forward(self, frame: torch.Tensor, index_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = frame.float()  # the uint8 input's only consumer: TensorRT allows uint8 at the I/O only
        x = self.fitted(f).permute(0, 3, 1, 2)
        amap, score = self.pipe.from_normalised(self.pipe.preprocess.normalise(x))
        up = self.unfitted(amap).reshape(-1)
        if self.pixel_zero != 0.0:  # the map on the score scale: its typical good value at bin 0
            up = up - self.pixel_zero
        u = up * index_scale  # (H·W,): bins of the map on the score scale (negative ones clamp to 0)
        idx = torch.clamp(torch.floor(u + 0.5), 0.0, 255.0).to(torch.int32)
        colour = torch.index_select(self.colour, 0, idx).reshape(1, self.h, self.w, 3)
        opacity = torch.index_select(self.opacity, 0, idx).reshape(1, self.h, self.w, 3)
        # f + a·(c − f) lies between f and c, so within [0, 255]: + 0.5 and truncation round it, no clamp needed
        out = (f + opacity * (colour - f) + 0.5).to(torch.uint8)
        return amap, score, out
