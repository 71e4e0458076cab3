"""STPM maths on tiny tensors against hand-computed values; backbones; the inspection pipeline."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edge_stpm.training.backbones import BACKBONES, Trunk
from edge_stpm.training.model import STPM, InspectionPipeline, Preprocess, anomaly_map, level_distance, stpm_loss


def test_level_distance_hand_computed() -> None:
    # one position, 2 channels: ft = (3, 4) → (0.6, 0.8); fs = (1, 0) → (1, 0); ½·((−0.4)² + 0.8²) = 0.4
    ft = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    fs = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    assert level_distance(ft, fs).item() == pytest.approx(0.4, abs=1e-7)
    # identical directions give 0 whatever the length
    assert level_distance(ft, 5 * ft).item() == pytest.approx(0.0, abs=1e-7)
    # opposite directions give the maximum ½·(2²) = 2
    assert level_distance(ft, -ft).item() == pytest.approx(2.0, abs=1e-6)


def test_loss_is_sum_over_levels_of_mean_distance() -> None:
    ft1 = torch.tensor([[3.0, 4.0], [1.0, 0.0]]).T.reshape(1, 2, 1, 2)  # positions (3,4) and (4,0)
    fs1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).T.reshape(1, 2, 1, 2)
    ft2 = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    fs2 = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    d1 = level_distance(ft1, fs1).flatten().tolist()
    assert d1 == pytest.approx([0.4, 0.0], abs=1e-6)
    loss = stpm_loss([ft1, ft2], [fs1, fs2])
    assert loss.item() == pytest.approx((0.4 + 0.0) / 2 + 1.0, abs=1e-6)


def test_anomaly_map_is_product_of_upsampled_levels() -> None:
    ft1 = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2).contiguous()
    fs1 = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2).contiguous()
    ft2 = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    fs2 = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    m = anomaly_map([ft1, ft2], [fs1, fs2], (4, 4))
    assert m.shape == (1, 1, 4, 4)
    assert torch.allclose(m, torch.full((1, 1, 4, 4), 0.4 * 1.0))


def test_preprocess_flips_bgr_and_normalises() -> None:
    x = torch.zeros(1, 1, 1, 3, dtype=torch.uint8)
    x[..., 0] = 255  # blue in BGR
    y = Preprocess()(x)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = [(0 - mean[0]) / std[0], (0 - mean[1]) / std[1], (1 - mean[2]) / std[2]]  # RGB order
    assert y.flatten().tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_pyramid_shapes(name: str) -> None:
    trunk = Trunk(name).eval()
    with torch.no_grad():
        feats = trunk(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == list(BACKBONES[name].channels)
    assert [f.shape[-1] for f in feats] == [16, 8, 4]


def test_pipeline_outputs_and_score_is_max() -> None:
    pipe = InspectionPipeline(STPM("resnet18"), 64).eval()
    x = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        m, s = pipe(x)
    assert m.shape == (2, 1, 64, 64) and m.dtype == torch.float32
    assert s.shape == (2,)
    assert torch.equal(s, m.amax(dim=(1, 2, 3)))
    assert (m >= 0).all()


def test_teacher_frozen_student_trains() -> None:
    stpm = STPM("resnet18")
    assert not any(p.requires_grad for p in stpm.teacher.parameters())
    assert all(p.requires_grad for p in stpm.student.parameters())
    stpm.train()
    assert not stpm.teacher.training and stpm.student.training


def test_resnet18_random_training_step_lowers_loss() -> None:
    torch.manual_seed(0)
    stpm = STPM("resnet18").train()
    pre = Preprocess()
    x = pre(torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8))
    opt = torch.optim.SGD(stpm.student.parameters(), lr=0.4, momentum=0.9, weight_decay=1e-4)
    losses = []
    for _ in range(6):
        t, s = stpm(x)
        loss = stpm_loss(t, s)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_gaussian_smoothing_keeps_constants_and_matches_opencv_inside() -> None:
    import cv2

    from edge_stpm.training.model import GaussianSmooth

    g = GaussianSmooth(4.0, 64)
    const = torch.full((1, 1, 64, 64), 2.5)
    assert torch.allclose(g(const), const, atol=1e-5)  # borders renormalised, not darkened
    x = torch.rand(1, 1, 64, 64)
    ref = cv2.GaussianBlur(x[0, 0].numpy(), (33, 33), 4.0, borderType=cv2.BORDER_CONSTANT)
    assert np.abs(g(x)[0, 0].numpy()[20:44, 20:44] - ref[20:44, 20:44]).max() < 1e-5
    pipe = InspectionPipeline(STPM("resnet18"), 64, sigma=4.0).eval()
    with torch.no_grad():
        m, s = pipe(torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8))
    assert torch.equal(s, m.amax(dim=(1, 2, 3)))


def test_low_memory_training_step_gives_the_same_student() -> None:
    """Activation checkpointing (``--low-memory``) recomputes blocks in the backward pass with batch norm's running
    statistics frozen: after two SGD steps the student's weights and running statistics equal the plain run's."""
    import copy

    from edge_stpm.training.train import student_features

    torch.manual_seed(0)
    base = STPM("mobilenet_v2", None)
    x = torch.randn(4, 3, 64, 64)
    results = []
    for low in (False, True):
        stpm = copy.deepcopy(base).train()
        opt = torch.optim.SGD(stpm.student.parameters(), lr=0.4, momentum=0.9)
        for _ in range(2):
            with torch.no_grad():
                t = stpm.teacher(x)
            loss = stpm_loss(t, student_features(stpm.student, x, low))
            opt.zero_grad()
            loss.backward()
            opt.step()
        results.append(stpm.student.state_dict())
    plain, low = results
    assert plain.keys() == low.keys()
    floats = [k for k in plain if plain[k].is_floating_point()]  # (num_batches_tracked counts recomputes; unused)
    assert any("running_mean" in k for k in floats)
    for k in floats:
        assert torch.allclose(plain[k], low[k], rtol=1e-5, atol=1e-6), k


def test_teacher_cache_trains_the_same_model(synth_dir, mobilenet_weights, tmp_path) -> None:
    """The teacher's pyramid computed once (``--teacher-cache``) instead of every step: a 3-epoch run gives the same
    validation loss per epoch (to 1e-6 relative) and the same kept epoch as the run that recomputes it."""
    import json

    from edge_stpm.training.train import TrainConfig, train

    runs = {}
    for cached in (False, True):
        s = train(TrainConfig(synth_dir, tmp_path / str(cached), backbone="mobilenet_v2", epochs=3, batch_size=8, head="stpm",
                              image_size=64, quiet=True, teacher_cache=cached))
        assert s["teacher_cache"] is cached
        runs[cached] = s
    a, b = ([h["val_loss"] for h in runs[c]["history"]] for c in (False, True))
    assert all(abs(x - y) <= 1e-6 * abs(x) for x, y in zip(a, b)), (a, b)
    assert runs[False]["best_epoch"] == runs[True]["best_epoch"]
    assert json.loads((tmp_path / "True" / "training.json").read_text())["teacher_cache_seconds"] > 0


def test_hard_feature_loss_averages_only_the_hardest_differences() -> None:
    """EfficientAD's hard-feature loss (``--loss hard``): the mean of the element-wise ½(t̂ − ŝ)² at or above its
    0.999 quantile, computed here by numpy; the gradient reaches only the positions holding those elements."""
    from edge_stpm.training.model import hard_feature_loss, l2_normalise, stpm_loss

    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 8, 16, 16, generator=g)
    s = torch.randn(2, 8, 16, 16, generator=g, requires_grad=True)
    d = (0.5 * (l2_normalise(t) - l2_normalise(s)) ** 2).detach().numpy().ravel()
    want = d[d >= np.quantile(d, 0.999)].mean()
    got = hard_feature_loss(t, s)
    assert float(got.detach()) == pytest.approx(want, rel=1e-5)
    assert float(stpm_loss([t], [s], "hard").detach()) == pytest.approx(want, rel=1e-5)
    got.backward()
    # exactly the (image, position) pairs holding an element at or above the quantile get a gradient (through the
    # L2 normalisation, on every channel there); every other position gets none
    full = (0.5 * (l2_normalise(t) - l2_normalise(s)) ** 2).detach()
    hard = (full >= torch.quantile(full.flatten(), 0.999)).any(dim=1)
    touched = s.grad.abs().sum(dim=1) > 0
    assert torch.equal(touched, hard) and 1 <= int(hard.sum()) <= int(np.ceil(0.001 * d.size))  # 5 of 512 here


def test_input_blur_is_opencvs_gaussian_inside_and_keeps_a_flat_image() -> None:
    """Preprocess(blur=σ) blurs the fitted image per channel: OpenCV's GaussianBlur with the same ±4σ kernel away from
    the border (1e-5), a flat image unchanged to the border (the renormalised zero padding), blur 0 = no blur."""
    import cv2

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    plain, blurred = Preprocess(), Preprocess(blur=1.0, size=64)
    got = blurred(torch.from_numpy(x))[0]
    ref = plain(torch.from_numpy(cv2.GaussianBlur(x[0].astype(np.float32), (9, 9), 1.0))[None])[0]
    assert float((got - ref)[:, 5:-5, 5:-5].abs().max()) < 1e-5
    assert float((got - plain(torch.from_numpy(x))[0]).abs().mean()) > 0.1  # it does blur
    flat = torch.full((1, 64, 64, 3), 77, dtype=torch.uint8)
    assert torch.allclose(blurred(flat), plain(flat), atol=1e-5)
    assert torch.equal(Preprocess(blur=0.0, size=64)(torch.from_numpy(x)), plain(torch.from_numpy(x)))
