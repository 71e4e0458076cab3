"""CUDA paths: PyTorch CUDA backend (FP16, channels_last, folded BN, CUDA graphs) and cuda-python buffers.
Run on a GPU machine by benchmarks/gpu_check.sh; CI has no GPU, so these skip there with the reason."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none; see benchmarks/gpu_check.sh)")


@pytest.fixture(scope="module")
def r18_ckpt(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_stpm.training.train import TrainConfig, train

    run = tmp_path_factory.mktemp("gpu_r18")
    train(TrainConfig(synth_dir, run, backbone="resnet18", epochs=2, batch_size=8, image_size=128, head="stpm",
                      teacher_weights="random", device="cuda", quiet=True))
    return run / "model.pt"


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_cuda_training_used_the_gpu(r18_ckpt: Path) -> None:
    from edge_stpm.training import checkpoint

    ck = checkpoint.read(r18_ckpt)
    assert ck["training"]["device"] == torch.cuda.get_device_name(0)


def test_torch_cuda_backend_matches_cpu(r18_ckpt: Path) -> None:
    from edge_stpm.training.torch_backend import TorchBackend

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 128, 128, 3), dtype=np.uint8)
    ref_m, ref_s = TorchBackend(r18_ckpt, device="cpu", optimize=False).infer(x)
    for prec, tol in (("fp32", 2e-3), ("fp16", 3e-2)):
        b = TorchBackend(r18_ckpt, device="cuda", precision=prec, batch=4, cuda_graph=True)
        assert b.graph is not None
        m, s = b.infer(x)
        assert _rel(m, ref_m) < tol, prec
        assert np.allclose(s, ref_s, rtol=tol * 5), prec
        m2, _ = b.infer(x[::-1].copy())
        assert _rel(m2, ref_m[::-1]) < tol, "graph replay must follow new inputs"


def test_batchnorm_folding_keeps_outputs(r18_ckpt: Path) -> None:
    from edge_stpm.training.torch_backend import TorchBackend

    x = np.random.default_rng(1).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    a = TorchBackend(r18_ckpt, device="cuda", precision="fp32", cuda_graph=False, optimize=False).infer(x)[0]
    b = TorchBackend(r18_ckpt, device="cuda", precision="fp32", cuda_graph=False, optimize=True).infer(x)[0]
    assert _rel(b, a) < 2e-3


def test_cuda_python_buffers_round_trip() -> None:
    from edge_stpm.runtime.backends.cuda import HostDeviceBuffer, Stream, check, cudart, gpu_info

    info = gpu_info()
    assert info["name"] == torch.cuda.get_device_name(0)
    assert info["compute_capability"] == "{}.{}".format(*torch.cuda.get_device_capability(0))
    rt = cudart()
    stream = Stream()
    a = HostDeviceBuffer((2, 64, 64, 3), np.uint8)
    b = HostDeviceBuffer((2, 64, 64, 3), np.uint8)
    a.host[...] = np.random.default_rng(0).integers(0, 256, a.shape, dtype=np.uint8)
    a.to_device(stream)
    check(rt.cudaMemcpyAsync(b.device_ptr, a.device_ptr, a.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream.stream))
    b.to_host(stream)
    stream.synchronize()
    assert np.array_equal(a.host, b.host)
    f = HostDeviceBuffer((3,), np.float32)
    f.host[:] = [1.5, -2.0, 3.25]
    f.to_device(stream)
    stream.synchronize()
    t = torch.empty(3, dtype=torch.float32, device="cuda")
    check(rt.cudaMemcpy(t.data_ptr(), f.device_ptr, f.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice))
    assert t.cpu().tolist() == [1.5, -2.0, 3.25]
    with pytest.raises(RuntimeError, match="CUDA error"):
        check(rt.cudaMemcpy(0, 0, 16, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice))
    for buf in (a, b, f):
        buf.free()
    stream.close()


def test_auto_backend_prefers_torch_cuda_for_checkpoint(r18_ckpt: Path) -> None:
    from edge_stpm.runtime.backends.select import resolve

    c = resolve(r18_ckpt, "auto")
    assert c.backend == "pytorch" and "CUDA" in c.reason


def test_twin_and_separate_trunks_agree_on_cuda(r18_ckpt: Path) -> None:
    from edge_stpm.training.torch_backend import TorchBackend

    x = np.random.default_rng(2).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    a = TorchBackend(r18_ckpt, device="cuda", precision="fp16", twin=False).infer(x)[0]
    b = TorchBackend(r18_ckpt, device="cuda", precision="fp16", twin=True).infer(x)[0]
    assert _rel(b, a) < 2e-2


def test_cuda_frame_path_matches_cpu_host_path(r18_ckpt: Path) -> None:
    """The frame path in a CUDA graph (FP16 trunks, twin trunk) against the CPU FP32 host path on the same frames:
    score within the FP16 export gate (5 % of the image threshold), overlays mostly equal (FP16 moves the map a
    little, so a few pixels change colour bin): mean |diff| ≤ 1 grey level. Bounds not yet measured on a GPU."""
    from edge_stpm.runtime.inspector import Inspector
    from edge_stpm.training.torch_backend import TorchBackend

    rng = np.random.default_rng(0)
    frames = [np.ascontiguousarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8).repeat(12, 0).repeat(16, 1))
              for _ in range(3)]  # 360×640 blocky frames
    gpu = Inspector(TorchBackend(r18_ckpt, device="cuda"), frame_path="auto")
    cpu = Inspector(TorchBackend(r18_ckpt, device="cpu"), frame_path="host")
    for f in frames:
        rg, rc = gpu.inspect(f), cpu.inspect(f)
        assert rg.path == "device" and rc.path == "host"
        assert abs(rg.score - rc.score) <= 0.05 * gpu.image_threshold
        d = np.abs(rg.overlay(f).astype(np.int16) - rc.overlay(f).astype(np.int16))
        assert d.mean() <= 1.0
    assert gpu.runners[(360, 640)].graph is not None  # replayed as a CUDA graph
