"""Loading, fitting and refusing bad image folders."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_stpm.data import fit_image, fit_mask, good_images, load_images, read_image, labelled_test_images, unfit_map
from edge_stpm.errors import UserError


def test_grayscale_loads_as_three_equal_channels(tmp_path: Path) -> None:
    g = (np.arange(30 * 20) % 256).astype(np.uint8).reshape(30, 20)
    cv2.imwrite(str(tmp_path / "g.png"), g)
    img = read_image(tmp_path / "g.png")
    assert img.shape == (30, 20, 3)
    assert (img[..., 0] == g).all() and (img[..., 1] == g).all() and (img[..., 2] == g).all()


def test_any_size_is_resized_to_model_input(tmp_path: Path) -> None:
    for i, (h, w) in enumerate([(120, 280), (600, 350), (64, 64)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((h, w, 3), 100, np.uint8))
    out = load_images(sorted(tmp_path.glob("*.png")), 96)
    assert out.shape == (3, 96, 96, 3) and out.dtype == np.uint8


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="broken.png"):
        read_image(bad)


def test_empty_and_missing_folders_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no images"):
        good_images(tmp_path)
    with pytest.raises(UserError, match="not found"):
        good_images(tmp_path / "nope")
    with pytest.raises(UserError, match="no test split"):
        labelled_test_images(tmp_path)


def test_mvtec_layout_items_and_masks(synth_dir: Path) -> None:
    items = labelled_test_images(synth_dir)
    assert {i.defect for i in items} == {"good", "scratch", "spot", "crack", "missing"}
    assert all((i.label == 0) == (i.defect == "good") for i in items)
    assert all(i.mask is not None and i.mask.is_file() for i in items if i.label)
    assert len(good_images(synth_dir)) == 60


@pytest.mark.parametrize("mode", ["stretch", "pad", "crop"])
def test_fit_modes_and_inverse(mode: str) -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 90:110] = 255
    fitted = fit_image(img, 64, mode)
    assert fitted.shape == (64, 64, 3)
    mask = fit_mask(img[..., 0], 64, mode)
    assert mask.shape == (64, 64) and mask.any()
    back = unfit_map(mask.astype(np.float32), (100, 200), mode)
    assert back.shape == (100, 200)
    assert back[50, 100] > 0.5 and back[5, 5] < 0.5


def test_unknown_fit_mode_refused() -> None:
    with pytest.raises(UserError, match="fit mode"):
        fit_image(np.zeros((8, 8, 3), np.uint8), 4, "squash")


def test_atomic_files_get_normal_permissions(tmp_path: Path) -> None:
    import os

    from edge_stpm.files import write_text

    mask = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
