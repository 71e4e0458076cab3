"""A short check on real industrial images (magnetic tile, ../shared/data): a few epochs on a subset must
already outline blowholes (pixel level; image-level AUROC on small blowholes needs the full run). The full accuracy run lives in benchmarks/magnetic_tile.sh."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import MAGNETIC_TILE

pytestmark = pytest.mark.skipif(not MAGNETIC_TILE.is_dir(), reason=f"real data not present at {MAGNETIC_TILE}")


def _subset(dst: Path, n_train: int = 120, n_test: int = 30) -> Path:
    for sub, n in (("train/good", n_train), ("test/good", n_test), ("test/blowhole", n_test)):
        (dst / sub).mkdir(parents=True)
        for p in sorted((MAGNETIC_TILE / sub).glob("*.png"))[:n]:
            os.symlink(p, dst / sub / p.name)
    (dst / "ground_truth" / "blowhole").mkdir(parents=True)
    for p in sorted((dst / "test" / "blowhole").glob("*.png")):
        m = MAGNETIC_TILE / "ground_truth" / "blowhole" / f"{p.stem}_mask.png"
        os.symlink(m, dst / "ground_truth" / "blowhole" / m.name)
    return dst


def test_few_epochs_on_real_tiles_find_blowholes(tmp_path: Path, mobilenet_weights: None) -> None:
    from edge_stpm.evaluate import evaluate
    from edge_stpm.train import TrainConfig, train

    data = _subset(tmp_path / "mt")
    s = train(TrainConfig(data, tmp_path / "run", backbone="mobilenet_v2", epochs=4, batch_size=16, image_size=128,
                          quiet=True))
    assert s["best_val_loss"] < s["history"][0]["val_loss"] or s["best_epoch"] == 1
    rep = evaluate(tmp_path / "run" / "model.pt", data, tmp_path / "rep", quiet=True)
    o = rep["overall"]
    assert o["pixel_auroc"] > 0.85 and o["aupro"] > 0.5, o
