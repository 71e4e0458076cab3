"""EfficientNet-Lite0: the hand-written architecture loads the published weights, matches the pyramid contract,
expects the input normalisation we give it, and exports a graph TensorRT's parser accepts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edge_stpm.training.backbones import IMAGENET_MEAN, IMAGENET_STD, LITE0_WEIGHTS, build_trunk, get_spec, pretrained_state
from edge_stpm.training.efficientnet_lite import EfficientNetLite0, SameConv

from conftest import MAGNETIC_TILE


def lite0_weights() -> dict[str, torch.Tensor]:
    if not any(p.is_file() for p in LITE0_WEIGHTS.candidates()):
        pytest.fail(f"EfficientNet-Lite0 weights missing ({LITE0_WEIGHTS.filename}): run .ci/fetch_weights.sh")
    return pretrained_state("efficientnet_lite0")[0]


def test_same_padding_matches_tensorflow_rule() -> None:
    """TF SAME on an even input: output ceil(n/s); stride 2 pads one more pixel after than before."""
    torch.manual_seed(0)
    for k, s in ((3, 1), (5, 1), (3, 2), (5, 2)):
        conv = SameConv(1, 1, k, s)
        x = torch.randn(1, 1, 16, 16)
        y = conv(x)
        assert y.shape[-1] == 16 // s
        total = max(k - s, 0)
        ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (total // 2, total - total // 2) * 2), conv.weight,
                                         stride=s)
        assert torch.equal(y, ref)


def test_lite0_loads_published_weights_and_gives_the_pyramid() -> None:
    state = lite0_weights()
    full = EfficientNetLite0()
    full.load_state_dict(state)  # strict: every published tensor has its place
    trunk = build_trunk("efficientnet_lite0", state).eval()
    with torch.no_grad():
        feats = trunk(torch.randn(2, 3, 128, 96))
    assert [tuple(f.shape) for f in feats] == [(2, c, 128 // s, 96 // s) for c, s in
                                              zip(get_spec("efficientnet_lite0").channels, (4, 8, 16))]


def _stem_variance_ratio(conv: torch.nn.Module, bn: torch.nn.BatchNorm2d, x: torch.Tensor, mean, std) -> float:
    xn = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        v = conv(xn).var(dim=(0, 2, 3))
    return float(torch.exp(torch.log(v / bn.running_var).median()))


def test_lite0_expects_tensorflow_lite_normalisation(mobilenet_weights: None) -> None:
    """The stem's batch-norm variance records what the network saw in training. On the same real images, the
    ratio observed/recorded under MobileNetV2 with its known ImageNet normalisation is the reference (about 0.48 on
    magnetic tile: the tiles vary less than ImageNet); Lite0's ratio is about 0.34 with (x−127)/128 and 1.70
    with ImageNet's mean/std (measured 2026-11-27). The normalisation in the spec must be the closer one, by a
    factor ≥ 2 in log distance (measured: 0.35 vs 1.26)."""
    import cv2
    import torchvision

    paths = sorted((MAGNETIC_TILE / "train" / "good").glob("*"))[::10]
    if not paths:
        pytest.skip("real data (../shared/data/magnetic_tile) not present")
    imgs = np.stack([cv2.resize(cv2.imread(str(p)), (256, 256))[:, :, ::-1] for p in paths]).astype(np.float32) / 255
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    mb = torchvision.models.mobilenet_v2()
    mb.load_state_dict(pretrained_state("mobilenet_v2")[0])
    ref = _stem_variance_ratio(mb.features[0][0], mb.features[0][1], x, IMAGENET_MEAN, IMAGENET_STD)
    lite = EfficientNetLite0()
    lite.load_state_dict(lite0_weights())
    spec = get_spec("efficientnet_lite0")
    ours = abs(np.log(_stem_variance_ratio(lite._conv_stem, lite._bn0, x, spec.mean, spec.std) / ref))
    other = abs(np.log(_stem_variance_ratio(lite._conv_stem, lite._bn0, x, IMAGENET_MEAN, IMAGENET_STD) / ref))
    assert ours * 2 <= other, (ours, other)


def test_lite0_graph_passes_tensorrt_rules_and_matches_pytorch(tmp_path: Path) -> None:
    """The asymmetric pads export as constant Pad nodes (after folding): no rule broken; ORT = PyTorch (1e-5)."""
    import onnxruntime as ort

    from edge_stpm.training.export.onnx_graphs import export_onnx
    from edge_stpm.contract.trt_rules import check_file
    from edge_stpm.training.model import STPM, InspectionPipeline

    pipe = InspectionPipeline(STPM("efficientnet_lite0", lite0_weights()), 64, sigma=2).eval()
    md = {"backbone": "efficientnet_lite0", "precision": "fp32", "image_size": 64, "thresholds": {"image": 1.0}}
    path = export_onnx(pipe, "fp32", 1, tmp_path / "lite0.onnx", md)
    assert check_file(path) == []
    x = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        ref = pipe(torch.from_numpy(x))[0].numpy()
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5
