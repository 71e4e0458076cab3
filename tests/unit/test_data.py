"""Loading, fitting and refusing bad image folders."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_stpm.common.images import fit_image, fit_mask, good_images, load_images, read_image, labelled_test_images, unfit_map
from edge_stpm.common.errors import UserError


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

    from edge_stpm.common.files import write_text

    mask = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_degenerate_image_files_are_read_as_a_viewer_shows_them_or_refused_in_one_line(tmp_path) -> None:
    """1×1 and 1×5 images, 16-bit, alpha, palette, EXIF-rotated, empty and truncated files."""
    import cv2
    import numpy as np
    import pytest
    from PIL import Image

    from edge_stpm.common.images import read_image
    from edge_stpm.common.errors import UserError

    rng = np.random.default_rng(0)
    for name, shape in (("1x1.png", (1, 1, 3)), ("1x5.png", (1, 5, 3))):
        cv2.imwrite(str(tmp_path / name), np.full(shape, 128, np.uint8))
        with pytest.raises(UserError, match="too small to inspect"):
            read_image(tmp_path / name)
    dark = (rng.integers(0, 1024, (40, 50)) * 16).astype(np.uint16)  # a dark 16-bit frame: stays dark
    cv2.imwrite(str(tmp_path / "dark16.png"), dark)
    got = read_image(tmp_path / "dark16.png")
    assert got.dtype == np.uint8 and got.shape == (40, 50, 3)
    assert np.abs(got[..., 0].astype(int) - np.round(dark / 257)).max() <= 1 and got.max() <= 64, "scaled by depth"
    rgba = rng.integers(0, 256, (30, 40, 4)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgba[..., :3])
    rgb = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    pal = Image.fromarray(rgb).convert("P")
    pal.save(tmp_path / "palette.png")
    assert np.array_equal(read_image(tmp_path / "palette.png"), np.asarray(pal.convert("RGB"))[..., ::-1])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    Image.fromarray(rng.integers(0, 256, (20, 60, 3)).astype(np.uint8)).save(tmp_path / "exif.jpg", exif=exif)
    assert read_image(tmp_path / "exif.jpg").shape == (60, 20, 3), "EXIF orientation applied"
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "trunc.png").write_bytes((tmp_path / "rgba.png").read_bytes()[:100])
    for name in ("empty.png", "trunc.png"):
        with pytest.raises(UserError, match="cannot read image") as e:
            read_image(tmp_path / name)
        assert "\n" not in str(e.value)


def test_csv_cells_a_spreadsheet_would_run_are_written_as_text() -> None:
    """CSV injection (OWASP): a text cell starting with = + - @ tab or CR gets a leading ' in every CSV the product
    writes (here the record's, as ``history --format csv`` writes it); numbers, a negative one too, stay numbers."""
    import csv
    import io

    from edge_stpm.common.cells import safe_cell
    from edge_stpm.runtime.loop.sinks.record import COLUMNS, to_csv

    row = {k: "" for k in COLUMNS} | {"source_spec": "=HYPERLINK(\"http://x\",\"y\")", "recipe_name": "@SUM(A1)",
                                      "score": -0.25, "verdict": "OK", "camera": None}
    got = next(csv.DictReader(io.StringIO(to_csv([row]))))
    assert got["source_spec"] == "'=HYPERLINK(\"http://x\",\"y\")" and got["recipe_name"] == "'@SUM(A1)"
    assert got["score"] == "-0.25" and got["verdict"] == "OK"
    assert [safe_cell(v) for v in ("+1", "-x", "\tA", "\rA", "ok", 3, None)] == ["'+1", "'-x", "'\tA", "'\rA", "ok", 3,
                                                                                None]
