"""What an operator sees: colour only near/above the threshold, contours only on NG, a colour bar, a HUD that
scales with the frame; recordings letterboxed at the source's frame rate. Screenshots of the real window and
recordings at three sizes are made by ``benchmarks/overlay_screens.py`` (committed under
``benchmarks/results/overlay/``)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_stpm.runtime.loop.sinks.recording import Recorder, letterbox
from edge_stpm.cli import app
from edge_stpm.runtime.overlay import (ALPHA, NEAR, TOP, alpha_lut, colour_lut, heatmap_overlay, inspection_overlay,
                               text_height)


def part(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (110 + 30 * np.sin(np.arange(w) / 3.0)[None, :, None] + rng.integers(0, 10, (h, w, 1))).repeat(3, 2).astype(np.uint8)


def blob_map(h: int, w: int, peak: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (peak * np.exp(-(((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (0.1 * min(h, w)) ** 2)))).astype(np.float32)


def test_lookup_tables() -> None:
    u = np.arange(256) * TOP / 255
    a = alpha_lut()
    assert (a[u < NEAR] == 0).all() and np.allclose(a[u >= 1.0], ALPHA)
    assert np.all(np.diff(a) >= 0)
    c = colour_lut()
    assert c.shape == (256, 3) and c.dtype == np.uint8
    assert tuple(c[255]) == (0, 0, 230) and c[255, 2] > c[255, 1]  # red at 2x the threshold (BGR)


def test_part_shown_as_is_below_half_the_threshold_and_contours_only_on_ng() -> None:
    frame = part(240, 320)
    amap = blob_map(240, 320, peak=3.0)                      # pixel threshold 1.0: a defect in the middle
    ok = heatmap_overlay(frame, amap, 1.0, contours=False)
    untouched = amap < NEAR * (1 - 2 / 255 * TOP / NEAR)    # below the first coloured bin
    assert np.array_equal(ok[untouched], frame[untouched])
    assert np.abs(ok[amap > 1.5].astype(int) - frame[amap > 1.5]).mean() > 30
    ng = heatmap_overlay(frame, amap, 1.0, contours=True)
    white = (ng == 255).all(axis=2) & ~(ok == 255).all(axis=2)
    assert white.sum() > 50, "NG frames outline the above-threshold region"
    quiet = heatmap_overlay(frame, blob_map(240, 320, peak=0.3), 1.0, contours=False)
    assert np.array_equal(quiet, frame), "a good part with a weak map is shown unchanged"


@pytest.mark.parametrize("h,w,px", [(256, 256, 18), (480, 640, 34), (1080, 1920, 76)])
def test_banner_scales_with_the_frame(h: int, w: int, px: int) -> None:
    assert text_height(np.zeros((h, w, 3), np.uint8)) == px
    img = inspection_overlay(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.float32), 1.0, True, 1.37, 0.0123)
    red = (img[..., 2] > 200) & (img[..., 1] < 80) & (img[..., 0] < 80)
    rows = np.flatnonzero(red[: 2 * px].any(axis=1))
    assert rows.size and rows.max() - rows.min() + 1 >= 0.7 * px >= 12, "capitals ~0.7 x text_height, >= 12 px"
    bar = img[h - int(0.35 * h):, w - int(0.12 * w):]
    assert (bar[..., 2] > 200).any() and (bar[..., 1] > 200).any(), "colour bar from amber/yellow to red"


def test_recording_letterboxes_mixed_sizes(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "m.avi", 15.0)
    rec.write(np.full((100, 200, 3), 200, np.uint8))
    rec.write(np.full((200, 100, 3), 200, np.uint8))          # portrait frame into a landscape video
    rec.finalise()
    cap = cv2.VideoCapture(str(tmp_path / "m.avi"))
    cap.read()
    ok, f = cap.read()
    assert ok and f.shape == (100, 200, 3)
    assert f[:, :40].max() < 40 and f[:, 80:120].mean() > 150, "black bars left and right, part not squashed"
    lb = letterbox(np.full((200, 100, 3), 200, np.uint8), (200, 100))
    assert lb.shape == (100, 200, 3) and (lb[:, 75:125] == 200).all() and (lb[:, :70] == 0).all()


def test_recording_keeps_the_source_frame_rate(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "25fps.avi"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (128, 128))
    for p in sorted((synth_dir / "test" / "good").glob("*.png"))[:5]:
        w.write(cv2.imread(str(p)))
    w.release()
    res = CliRunner().invoke(app, ["run", "--model", str(exported), "--source", str(src), "--headless", "--record",
                                   str(tmp_path / "out.avi"), "--summary-json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    cap = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0, abs=0.01)
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 5


def test_committed_screenshots_exist() -> None:
    shots = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "overlay"
    for size in ("256", "640x480", "1920x1080"):
        for kind in (f"video_{size}_ok.png", f"video_{size}_ng.png", f"window_{size}.png"):
            img = cv2.imread(str(shots / kind))
            assert img is not None, kind
    assert cv2.imread(str(shots / "video_1920x1080_ng.png")).shape == (1080, 1920, 3)


def test_progress_without_a_terminal_prints_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_stpm.common.progress import PlainProgress, bar

    assert isinstance(bar(), PlainProgress), "pytest's captured stderr is not a terminal"
    with PlainProgress(interval=0.0) as p:
        t = p.add_task("train x", total=4, info="")
        for i in range(4):
            p.update(t, advance=1, info=f"epoch {i + 1}/4")
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("train x")]
    assert lines[0].startswith("train x: 1/4 (25%)") and lines[-1].startswith("train x: 4/4 (100%)"), lines
    assert "— epoch 4/4" in lines[-1] and not any("\r" in l or "━" in l for l in lines)


def test_the_hud_leaves_a_small_part_visible() -> None:
    """A 128-px part (the day-one path's) with five HUD lines: the banner and its lines stay in the top 40 % of the
    frame (before: the lines ran down to ~90 % of it); a 720-px frame keeps all five lines."""
    from edge_stpm.runtime.overlay import verdict_banner

    hud = ["fps 29.1", "verdict 12 ms", "recipe tile", "source cam0", "ng 3 of 100"]
    for side, bound in ((128, 0.40), (256, 0.40), (720, 0.42)):
        img = np.full((side, side, 3), 128, np.uint8)
        verdict_banner(img, True, 1.2, hud, threshold=2.3)
        rows = np.where(np.any(img != 128, axis=2).any(axis=1))[0]
        assert (rows.max() + 1) / side <= bound, (side, rows.max() + 1)
    big = np.full((720, 720, 3), 128, np.uint8)
    verdict_banner(big, True, 1.2, hud, threshold=2.3)
    assert np.any(big[250:290] != 128), "the last HUD line is drawn on a large frame"
