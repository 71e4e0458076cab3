"""Shared fixtures: a small synthetic set, a mobilenet_v2 checkpoint trained on it (real ImageNet teacher),
and its exported ONNX graphs. Built once per session; everything runs on the CPU."""
from __future__ import annotations

import os
from pathlib import Path

import edge_stpm  # noqa: F401  (first: sets OpenMP's passive wait policy before torch loads)
import pytest
import torch

from edge_stpm.training.backbones import weights_filename

MAGNETIC_TILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic_tile"
SIZE = 128


def pytest_configure(config: pytest.Config) -> None:
    import tempfile

    from edge_stpm.common.threads import available_cores

    # the box's state (the inspection record, the MQTT outbox) goes to a fresh folder, never the user's
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="edge-stpm-test-data-")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", min(2, available_cores()))))


@pytest.fixture(scope="session")
def mobilenet_weights() -> None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / weights_filename("mobilenet_v2")
    if not path.is_file():
        pytest.fail(f"ImageNet MobileNetV2 weights missing at {path}: run .ci/fetch_weights.sh (see README)")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_stpm.training.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, SynthConfig(size=SIZE, n_train=60, n_test_good=10, n_test_defect=5, video_frames=60, seed=1))
    return out


@pytest.fixture(scope="session")
def trained(synth_dir: Path, mobilenet_weights: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN_DIR of a mobilenet_v2 model trained on ``synth_dir``; the checkpoint is RUN_DIR/model.pt."""
    from edge_stpm.training.train import TrainConfig, train

    run = tmp_path_factory.mktemp("run")
    train(TrainConfig(synth_dir, run, backbone="mobilenet_v2", epochs=20, batch_size=8, image_size=SIZE, head="stpm",
                      quiet=True))
    return run


@pytest.fixture(scope="session")
def trained_memory(synth_dir: Path, mobilenet_weights: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN_DIR of a memory-bank head (nothing trained) on ``synth_dir``; the checkpoint is RUN_DIR/model.pt."""
    from edge_stpm.training.train import TrainConfig, train

    run = tmp_path_factory.mktemp("run_memory")
    train(TrainConfig(synth_dir, run, backbone="mobilenet_v2", batch_size=8, image_size=SIZE, head="memory",
                      quiet=True))
    return run


@pytest.fixture(scope="session")
def exported(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with model_fp32/fp16/int8.onnx of the trained checkpoint."""
    from edge_stpm.training.export.exporter import export

    out = tmp_path_factory.mktemp("engines") / "synth"
    export(trained / "model.pt", ["fp32", "fp16", "int8"], out, calib_root=out.parent / "calibration", quiet=True)
    return out


@pytest.fixture(scope="session")
def exported_memory(trained_memory: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The FP32 bundle of the memory-head checkpoint (same backbone and input size as ``exported``)."""
    from edge_stpm.training.export.exporter import export

    out = tmp_path_factory.mktemp("engines_memory") / "synth_memory"
    export(trained_memory / "model.pt", ["fp32"], out, quiet=True)
    return out
