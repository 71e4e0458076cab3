"""STPM (teacher, student, loss, anomaly map) and the exportable InspectionPipeline.

The inspection pipeline is the one graph every backend runs: uint8 BGR NHWC in, anomaly map and image
score out, with colour order, scaling and ImageNet normalisation inside it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edge_stpm.contract.options import DEFAULT_HEAD, HEAD_NAMES  # noqa: F401  (DEFAULT_HEAD: train reads it here)
from edge_stpm.training.backbones import IMAGENET_MEAN, IMAGENET_STD, Trunk, build_trunk, get_spec
from edge_stpm.training.heads.memory import MemoryBank, patch_features

EPS = 1e-12


def level_distance(ft: torch.Tensor, fs: torch.Tensor) -> torch.Tensor:
    """½·Σ_c (ft/‖ft‖ − fs/‖fs‖)² over channels: ``(B, C, h, w)`` ×2 → ``(B, 1, h, w)``."""
    d = l2_normalise(ft) - l2_normalise(fs)
    return 0.5 * torch.sum(d * d, dim=1, keepdim=True)


def l2_normalise(f: torch.Tensor) -> torch.Tensor:
    """f / max(‖f‖₂ over channels, 1e-12) for ``(B, C, h, w)``; written out so ONNX gets no shape subgraph."""
    return f / torch.clamp(torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)), min=EPS)


LOSS_REDUCTIONS = ("sum", "mean", "hard")
HARD_QUANTILE = 0.999  # EfficientAD's hard-feature loss: only the differences at or above this quantile count
DEFAULT_LOSS_REDUCTION = "mean"  # won by the rule in benchmarks/results/accuracy/RULE.md over "sum" (TABLE.md)


def stpm_loss(t_feats: list[torch.Tensor], s_feats: list[torch.Tensor], reduction: str = DEFAULT_LOSS_REDUCTION) -> torch.Tensor:
    """STPM loss, summed over levels. Per level ``level_distance`` averaged over positions, then over the batch:

    ``"sum"`` (the official STPM code's ``cal_loss`` and anomalib's ``STFPMLoss``): summed over the images of the
    batch, so the gradient grows with the batch size; ``"mean"``: averaged over them (a step batch-size times
    smaller at the same learning rate); ``"hard"``: ``hard_feature_loss`` per level.
    """
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"unknown loss reduction {reduction!r}")
    if reduction == "hard":
        return sum(hard_feature_loss(t.float(), s.float()) for t, s in zip(t_feats, s_feats))
    per_image = sum(level_distance(t.float(), s.float()).mean(dim=(1, 2, 3)) for t, s in zip(t_feats, s_feats))
    return per_image.sum() if reduction == "sum" else per_image.mean()


def hard_feature_loss(ft: torch.Tensor, fs: torch.Tensor, q: float = HARD_QUANTILE) -> torch.Tensor:
    """EfficientAD's hard-feature loss on one level: the element-wise ½(ft/‖ft‖ − fs/‖fs‖)² over the batch, channels
    and positions, averaged over the elements at or above its ``q`` quantile (the quantile of at most 2²⁴ evenly
    strided elements: ``torch.quantile``'s limit)."""
    d = l2_normalise(ft) - l2_normalise(fs)
    d = 0.5 * d * d
    flat = d.detach().flatten()
    thr = torch.quantile(flat[:: max(1, -(-flat.numel() // 2**24))], q)
    return d[d >= thr].mean()


MAP_COMBINES = ("product", "weighted_sum")
# won by the rule in benchmarks/results/accuracy/RULE_R2.md (magnetic tile, 3 seeds; r2_heads/TABLE.md) over the
# official head (product of the levels, max of the map); checkpoints without these keys keep the official head
DEFAULT_MAP_COMBINE = "weighted_sum"
DEFAULT_SCORE_TOP_PERCENT = 2.0


def anomaly_map(t_feats: list[torch.Tensor], s_feats: list[torch.Tensor], size: tuple[int, int],
                weights: tuple[float, ...] | None = None) -> torch.Tensor:
    """The bilinearly upsampled level distances combined: their product (the official STPM head), or with
    ``weights`` their weighted sum — each level divided by its spread on held-out good images
    (``good_level_weights``), which ranks pixels and images exactly as the sum of standardised levels would (the
    means only shift the map) while the map stays positive. ``(B, 1, H, W)`` float32."""
    amap = None
    for i, (t, s) in enumerate(zip(t_feats, s_feats)):
        d = F.interpolate(level_distance(t.float(), s.float()), size=size, mode="bilinear", align_corners=False)
        if weights is not None:
            d = d * weights[i]
            amap = d if amap is None else amap + d
        else:
            amap = d if amap is None else amap * d
    return amap


@torch.no_grad()
def good_level_weights(pipe: "InspectionPipeline", images: torch.Tensor, batch: int = 16) -> tuple[float, ...]:
    """1 / (standard deviation of each level's upsampled distance map over ``images``, uint8 NHWC good images)."""
    size = pipe.image_size
    sums: list[list[float]] = []
    for i in range(0, len(images), batch):
        x = pipe.preprocess(images[i : i + batch])
        for k, (t, s) in enumerate(zip(pipe.teacher(x), pipe.student(x))):
            d = F.interpolate(level_distance(t.float(), s.float()), size=(size, size), mode="bilinear",
                              align_corners=False).double()
            if len(sums) <= k:
                sums.append([0.0, 0.0, 0.0])
            sums[k][0] += float(d.numel())
            sums[k][1] += float(d.sum())
            sums[k][2] += float((d * d).sum())
    out = []
    for n, s1, s2 in sums:
        var = max(s2 / n - (s1 / n) ** 2, 0.0)
        if var <= 0:
            raise ValueError("a pyramid level has no spread on the held-out good images")
        out.append(1.0 / math.sqrt(var))
    return tuple(out)


class GaussianSmooth(nn.Module):
    """Gaussian blur of a map ``(B, 1, H, W)`` (or of each of ``channels`` channels) as two 1-D convolutions with zero padding, renormalised by the
    blurred all-ones image so borders are not darkened (no Pad op: plain Conv + Mul for every runtime).

    ``sigma`` in pixels of the model input; the kernel spans ±4σ. Not part of the official STPM or anomalib's STFPM (their
    heads have no smoothing); anomalib applies such a blur in PaDiM/PatchCore post-processing. On magnetic tile it
    raised pixel AUROC (see the README).
    """

    def __init__(self, sigma: float, size: int, channels: int = 1) -> None:
        super().__init__()
        self.sigma = float(sigma)
        self.radius = radius = int(4.0 * sigma + 0.5)
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (x / sigma) ** 2)
        k = k / k.sum()
        # one kernel per channel (a depthwise Conv each way for ``channels`` > 1); the renormalisation is the same for
        # every channel
        self.register_buffer("kv", k.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), persistent=False)
        self.register_buffer("kh", k.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), persistent=False)
        self.channels = channels
        ones = torch.ones(1, 1, size, size)
        self.register_buffer("inv_norm", 1.0 / self._blur(ones, self.kv[:1], self.kh[:1], 1), persistent=False)

    def _blur(self, m: torch.Tensor, kv: torch.Tensor, kh: torch.Tensor, groups: int) -> torch.Tensor:
        m = F.conv2d(m, kv, padding=(self.radius, 0), groups=groups)
        return F.conv2d(m, kh, padding=(0, self.radius), groups=groups)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self._blur(m, self.kv, self.kh, self.channels) * self.inv_norm


class Preprocess(nn.Module):
    """uint8 BGR ``(B, H, W, 3)`` → ImageNet-normalised RGB float32 ``(B, 3, H, W)``.

    ``blur`` > 0: a Gaussian blur of that σ (pixels of the model input, ``size`` × ``size``) after normalising — the
    same renormalised zero-padded kernel as the map's smoothing, per channel (it commutes with the per-channel
    normalisation, so it is the blur of the fitted image itself)."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 blur: float = 0.0, size: int = 0) -> None:
        super().__init__()
        m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * s), persistent=False)
        self.register_buffer("shift", -m / s, persistent=False)
        self.blur = float(blur)
        self.smooth = GaussianSmooth(blur, size, channels=3) if blur > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT refuses any uint8 tensor that is not a network input or output, so the
        # uint8 input's first consumer must be the Cast (ONNX: Cast → Transpose → Slice → Mul → Add).
        return self.normalise(x.float().permute(0, 3, 1, 2))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Float BGR NCHW in [0, 255] → normalised (and blurred, with ``blur``) RGB NCHW."""
        x = x.flip(1) * self.scale + self.shift
        return self.smooth(x) if self.smooth is not None else x


class STPM(nn.Module):
    """Frozen teacher and trainable student of the same architecture."""

    def __init__(self, backbone: str, teacher_state: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.teacher: Trunk = build_trunk(backbone, teacher_state)
        self.student: Trunk = build_trunk(backbone, None)
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "STPM":
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Normalised float ``(B, 3, H, W)`` → (teacher features, student features)."""
        with torch.no_grad():
            t = self.teacher(x)
        return t, self.student(x)


HEADS = HEAD_NAMES


def _spread(d: torch.Tensor, acc: list[float]) -> None:
    d = d.double()
    acc[0] += float(d.numel())
    acc[1] += float(d.sum())
    acc[2] += float((d * d).sum())


def _inverse_std(acc: list[float], what: str) -> float:
    n, s1, s2 = acc
    var = max(s2 / n - (s1 / n) ** 2, 0.0)
    if var <= 0:
        raise ValueError(f"{what} has no spread on the held-out good images")
    return 1.0 / math.sqrt(var)


@torch.no_grad()
def good_head_weights(stpm: STPM, size: int, memory: torch.Tensor, level_weights: tuple[float, ...] | None,
                      images: torch.Tensor, batch: int = 8, input_blur: float = 0.0) -> tuple[float, float]:
    """For head ``both``: 1 / (standard deviation over ``images``, uint8 NHWC good images) of the STPM map and of
    the memory map (unsmoothed), so each contributes on the same scale; like ``good_level_weights`` the means are
    left out (they only shift the sum) and the map stays positive."""
    pipe = InspectionPipeline(stpm, size, level_weights=level_weights, head="memory", memory=memory,
                              input_blur=input_blur).eval()
    pipe = pipe.to(images.device)
    acc_s, acc_m = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    for i in range(0, len(images), batch):
        x = pipe.preprocess(images[i : i + batch])
        t = pipe.teacher(x)
        _spread(anomaly_map(t, pipe.student(x), (size, size), pipe.level_weights), acc_s)
        _spread(pipe.memory_map(t), acc_m)
    return _inverse_std(acc_s, "the STPM map"), _inverse_std(acc_m, "the memory map")


class InspectionPipeline(nn.Module):
    """The whole inspection graph: uint8 BGR ``(B, H, W, 3)`` → (map ``(B, 1, H, W)`` f32, score ``(B,)`` f32).

    ``trunk_dtype`` float16 runs both trunks in half precision while the head (normalise, difference,
    upsample, product, smoothing, score) stays float32. ``sigma`` > 0 blurs the map (pixels) before the score;
    0 is the official STPM head. ``top_percent`` > 0 scores the image by the mean of the top that % of the map
    instead of its max (``image_score``).

    ``input_blur`` > 0 blurs the fitted input (σ in its pixels, ``Preprocess``) before the teacher.

    ``memory`` (a bank ``(M, D)`` of the teacher's good patches, ``heads.memory``) adds the memory-bank head:
    ``head`` "memory" maps by nearest-neighbour distance alone (the student is not run and not in the graph),
    "both" adds the two maps, each scaled by ``head_weights`` (1 / its spread on held-out good images).
    """

    def __init__(self, stpm: STPM, image_size: int, trunk_dtype: torch.dtype = torch.float32,
                 sigma: float = 0.0, top_percent: float = 0.0, level_weights: tuple[float, ...] | None = None,
                 head: str = "stpm", memory: torch.Tensor | None = None,
                 head_weights: tuple[float, float] | None = None, input_blur: float = 0.0) -> None:
        super().__init__()

        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}")
        if (head != "stpm") != (memory is not None):
            raise ValueError(f"head {head!r} {'needs' if head != 'stpm' else 'takes no'} memory bank")
        self.smooth = GaussianSmooth(sigma, image_size) if sigma > 0 else None
        self.score_k = score_k(top_percent, image_size)
        self.level_weights = tuple(float(w) for w in level_weights) if level_weights else None
        spec = get_spec(stpm.backbone)
        self.preprocess = Preprocess(spec.mean, spec.std, input_blur, image_size)
        self.input_blur = float(input_blur)
        self.backbone = stpm.backbone
        self.teacher = stpm.teacher
        self.student = stpm.student
        self.head_kind = head
        self.memory = MemoryBank(memory) if memory is not None else None
        self.head_weights = tuple(float(w) for w in head_weights) if head_weights else (1.0, 1.0)
        self.image_size = int(image_size)
        self.trunk_dtype = trunk_dtype

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_normalised(self.preprocess(x))

    def from_normalised(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float ``(B, 3, S, S)`` → (map, score)."""
        x = x.to(self.trunk_dtype)
        t = self.teacher(x)
        if self.memory is None:
            return head(t, self.student(x), self.image_size, self.smooth, self.score_k, self.level_weights)
        amap = self.memory_map(t)
        if self.head_kind == "both":
            s = anomaly_map(t, self.student(x), (self.image_size, self.image_size), self.level_weights)
            amap = s * self.head_weights[0] + amap * self.head_weights[1]
        if self.smooth is not None:
            amap = self.smooth(amap)
        return amap, image_score(amap, self.score_k)

    def memory_map(self, t_feats: list[torch.Tensor]) -> torch.Tensor:
        """The memory head's map of the teacher's pyramid, upsampled to the input size ``(B, 1, S, S)``."""
        d = self.memory(patch_features(t_feats))
        return F.interpolate(d, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)


TOP_PERCENT_MAX = 10.0
TENSORRT_TOPK_MAX = 3840  # TensorRT's TopK layer takes K up to 3840


def score_k(top_percent: float, size: int) -> int:
    """How many map pixels the image score averages: 0 = the max (one pixel, the official STPM head), else the top
    ``top_percent`` % of the ``size``² map, at least one pixel."""
    if not 0.0 <= top_percent <= TOP_PERCENT_MAX:
        raise ValueError(f"top_percent must be in 0..{TOP_PERCENT_MAX:g}")
    return 0 if top_percent == 0 else max(1, math.ceil(top_percent / 100.0 * size * size))


def image_score(amap: torch.Tensor, k: int = 0) -> torch.Tensor:
    """``(B, 1, H, W)`` → ``(B,)``: the map's max (k = 0), or the mean of its k largest values (ONNX TopK +
    ReduceMean; every backend runs the same ops, so every backend gives the same score)."""
    if k <= 0:
        return torch.amax(amap, dim=(1, 2, 3))
    return torch.topk(amap.flatten(1), k, dim=1).values.mean(dim=1)


def head(t_feats: list[torch.Tensor], s_feats: list[torch.Tensor], size: int,
         smooth: GaussianSmooth | None, k: int = 0,
         weights: tuple[float, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of both trunks → (map ``(B, 1, size, size)``, image score ``(B,)``), all float32."""
    amap = anomaly_map(t_feats, s_feats, (size, size), weights)
    if smooth is not None:
        amap = smooth(amap)
    return amap, image_score(amap, k)
