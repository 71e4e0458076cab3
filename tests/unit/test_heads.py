"""The memory-bank head (training/heads/memory.py): coreset selection, the nearest-neighbour map, the head in the
checkpoint, in the exported graph (MatMul + ReduceMin over an initializer) and on every precision; changing the
head of a checkpoint with calibrate."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edge_stpm.common.errors import UserError
from edge_stpm.training.heads.memory import (
    MemoryBank, bank_entries, feature_dims, k_center_greedy, patch_features,
)


def _farthest_point_reference(x: np.ndarray, k: int, first: int) -> list[int]:
    """Plain farthest-point selection in numpy (exact distances): the definition k_center_greedy implements."""
    chosen = [first]
    d = ((x - x[first]) ** 2).sum(1)
    for _ in range(k - 1):
        i = int(np.argmax(d))
        chosen.append(i)
        d = np.minimum(d, ((x - x[i]) ** 2).sum(1))
    return chosen


def test_k_center_greedy_is_farthest_point_selection() -> None:
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(3))
    got = k_center_greedy(x, 25, seed=7, dims=0).tolist()  # dims 0: no projection, exact distances
    assert len(set(got)) == 25
    assert got == _farthest_point_reference(x.double().numpy(), 25, got[0])


def test_k_center_greedy_covers_every_cluster() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 64, generator=g) * 50
    x = (centres[:, None, :] + torch.randn(10, 200, 64, generator=g)).reshape(-1, 64)
    got = k_center_greedy(x, 10, seed=1)  # projected to 32 dims
    assert sorted((got // 200).tolist()) == list(range(10)), "one centre per cluster"
    assert k_center_greedy(x, 5000).tolist() == list(range(2000)), "k ≥ n keeps everything"


def test_bank_entries_fraction_and_byte_cap() -> None:
    assert bank_entries(100_000, 0.01, 128, 32.0) == 1000
    assert bank_entries(100_000, 1.0, 128, 1.0) == 2**20 // 512  # 1 MB of 128 float32 dims
    assert bank_entries(10, 0.0001, 128, 32.0) == 1


def test_memory_map_is_the_nearest_neighbour_distance() -> None:
    g = torch.Generator().manual_seed(0)
    bank, feats = torch.randn(300, 16, generator=g), torch.randn(2, 16, 5, 7, generator=g)
    got = MemoryBank(bank)(feats)
    want = torch.cdist(feats.flatten(2).transpose(1, 2), bank).amin(dim=2).view(2, 1, 5, 7)
    assert got.shape == (2, 1, 5, 7)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert float(MemoryBank(bank)(bank.t().reshape(1, 16, 300, 1)).max()) < 1e-2, "a bank entry is at distance 0"


def test_patch_features_shape_and_stride() -> None:
    levels = [torch.randn(1, 24, 32, 32), torch.randn(1, 32, 16, 16), torch.randn(1, 96, 8, 8)]
    f = patch_features(levels)
    assert f.shape == (1, feature_dims((24, 32, 96)), 16, 16) == (1, 128, 16, 16)
    # level 2's part is its 3×3 average (borders averaged over the 3×3 window with zero padding)
    torch.testing.assert_close(f[:, :32, 5, 5], levels[1][:, :, 4:7, 4:7].mean(dim=(2, 3)))


def test_memory_head_on_synthetic_parts(trained_memory: Path, synth_dir: Path, tmp_path: Path) -> None:
    """Nothing trained; the map catches the synthetic defects. Seeds 0/1/2 of this fixture measured 2026-12-04:
    image AUROC 1.000 / 1.000 / 1.000, pixel 0.984 / 0.984 / 0.983, AUPRO 0.950 / 0.951 / 0.949; bounds 0.03 below
    the worst (another CPU's floats, another coreset start)."""
    from edge_stpm.training.evaluate import evaluate

    s = json.loads((trained_memory / "training.json").read_text())
    assert s["epochs_run"] == 0 and s["memory"]["entries"] == bank_entries(s["memory"]["patches"], 0.01, 128, 32.0)
    assert not (trained_memory / "loss.png").exists()
    r = evaluate(trained_memory / "model.pt", synth_dir, tmp_path / "rep", device="cpu", quiet=True)
    assert r["overall"]["image_auroc"] >= 0.97
    assert r["overall"]["pixel_auroc"] >= 0.95 and r["overall"]["aupro"] >= 0.92


def test_memory_checkpoint_has_no_student_and_refuses_a_missing_bank(trained_memory: Path, tmp_path: Path) -> None:
    from edge_stpm.training import checkpoint

    ck = checkpoint.read(trained_memory / "model.pt")
    assert ck["head"] == "memory" and ck["student"] == {} and ck["memory_bank"].shape[1] == 128
    ck.pop("_path")
    ck["memory_bank"] = None
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(UserError, match=r"field memory_bank: head 'memory' needs"):
        checkpoint.read(tmp_path / "bad.pt")


def test_memory_graph_is_matmul_and_reducemin_on_every_precision(trained_memory: Path, synth_dir: Path,
                                                                tmp_path: Path) -> None:
    from edge_stpm.contract.artifacts import read_onnx_metadata
    from edge_stpm.contract.gates import GATES
    from edge_stpm.training.export.exporter import export

    out = tmp_path / "bundle"
    rep = export(trained_memory / "model.pt", ["fp32", "fp16", "int8"], out, calib=synth_dir / "train" / "good",
                 calib_root=tmp_path / "cal", data=synth_dir, quiet=True)
    g = onnx.load(str(out / "model_fp32.onnx"))
    ops = collections.Counter(n.op_type for n in g.graph.node)
    assert ops["MatMul"] == 1 and ops["ReduceMin"] == 1
    bank = next(t for t in g.graph.initializer if t.name.endswith("bank_t"))
    md = read_onnx_metadata(out / "model_int8.onnx")
    assert md["head"] == "memory" and list(bank.dims) == [128, md["memory"]["entries"]]
    assert "memory bank" in (out / "README.md").read_text()
    assert rep["graphs"]["fp32"]["parity_vs_pytorch"]["map_rel_l2"] <= 1e-4
    for prec in ("fp16", "int8"):
        assert not rep["graphs"][prec]["gate"]["failures"]
        assert rep["graphs"][prec]["parity_vs_pytorch"]["map_rel_l2"] <= GATES[prec]["map_rel_l2"]
        drop = rep["graphs"]["fp32"]["test"]["image_auroc"] - rep["graphs"][prec]["test"]["image_auroc"]
        assert drop <= 0.01


def test_calibrate_changes_the_head(trained: Path, trained_memory: Path, synth_dir: Path, tmp_path: Path) -> None:
    import shutil

    from edge_stpm.training import checkpoint
    from edge_stpm.training.calibrate import recalibrate
    from edge_stpm.training.evaluate import evaluate

    both = tmp_path / "both.pt"
    shutil.copy(trained / "model.pt", both)
    recalibrate(both, head="both", quiet=True)
    ck = checkpoint.read(both)
    assert ck["head"] == "both" and len(ck["head_weights"]) == 2 and ck["memory_bank"] is not None
    r = evaluate(both, synth_dir, tmp_path / "rep", device="cpu", quiet=True)
    assert r["overall"]["image_auroc"] >= 0.9
    mem = tmp_path / "mem.pt"
    shutil.copy(trained_memory / "model.pt", mem)
    with pytest.raises(UserError, match="needs a trained student"):
        recalibrate(mem, head="stpm", quiet=True)


def test_threshold_k_defaults_per_head_and_the_option(trained: Path, trained_memory: Path, tmp_path: Path) -> None:
    """The memory head's image threshold uses k 2 (RULE_R3.md addendum 1), the student's k 3; the student's pixel
    threshold keeps k 3, the memory head's is the held-out pixels' 99.9th percentile (RULE_R4.md addendum 5) with its
    σ 1 (at 256²) input blur; calibrate --threshold-k 3 on the memory checkpoint raises its image threshold (log-normal held-out
    scores: exp(mean + 3σ) > exp(mean + 2σ) whenever σ > 0) and leaves the pixel threshold and its method as they
    were."""
    import shutil

    from edge_stpm.training import checkpoint
    from edge_stpm.training.calibrate import recalibrate

    mem = checkpoint.read(trained_memory / "model.pt")["thresholds"]
    stpm = checkpoint.read(trained / "model.pt")["thresholds"]
    assert (mem["k"], mem["pixel_k"], mem["pixel_method"]) == (2.0, None, "p999")
    assert (stpm["k"], stpm["pixel_k"]) == (3.0, 3.0) and "pixel_method" not in stpm
    assert checkpoint.read(trained_memory / "model.pt")["input_blur"] == 0.5  # σ 1 at 256², scaled to the 128² fixture
    assert checkpoint.read(trained / "model.pt")["input_blur"] == 0.0
    copy = tmp_path / "k3.pt"
    shutil.copy(trained_memory / "model.pt", copy)
    thr = recalibrate(copy, k=3.0, quiet=True)
    assert thr["k"] == 3.0 and thr["image"] > mem["image"]
    assert thr["pixel"] == pytest.approx(mem["pixel"], rel=1e-6) and thr["pixel_method"] == "p999"


def test_a_checkpoint_without_input_blur_runs_unblurred(trained_memory: Path, tmp_path: Path, synth_dir: Path) -> None:
    """A checkpoint from before round 4's input blur (no ``input_blur`` key) loads with no blur in its graph and says
    0 in the graph metadata; today's memory checkpoint carries σ 0.5 at 128², and the blur changes its map."""
    import cv2
    import torch

    from edge_stpm.contract.artifacts import graph_metadata
    from edge_stpm.training import checkpoint

    ck = torch.load(trained_memory / "model.pt", weights_only=False)
    old = tmp_path / "old.pt"
    torch.save({k: v for k, v in ck.items() if k != "input_blur"}, old)
    pipe_old, meta_old = checkpoint.load_pipeline(old)
    pipe_new, meta_new = checkpoint.load_pipeline(trained_memory / "model.pt")
    assert pipe_old.preprocess.smooth is None and "input_blur" not in meta_old
    assert graph_metadata(meta_old, "fp32", 1, "x")["input_blur"] == 0.0
    assert pipe_new.preprocess.smooth is not None and graph_metadata(meta_new, "fp32", 1, "x")["input_blur"] == 0.5
    img = cv2.resize(cv2.imread(str(sorted((synth_dir / "test" / "good").glob("*.png"))[0])), (128, 128))
    x = torch.from_numpy(img[None])
    with torch.no_grad():
        a, b = pipe_old(x)[0], pipe_new(x)[0]
    assert float((a - b).abs().max()) > 1e-3 * float(b.abs().max())
