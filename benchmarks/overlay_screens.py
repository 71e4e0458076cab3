"""Screenshots of what an operator sees, at 256², 640×480 and 1920×1080: frames extracted from `edge-stpm run
--record` videos (an OK frame and an NG frame) and the `run` window under Xvfb (xwd screenshot).

    python3 benchmarks/overlay_screens.py BUNDLE GOOD.png DEFECT.png [OUT]   (default OUT benchmarks/results/overlay)

Needs Xvfb and xwd for the window shots (skipped with a note otherwise)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "line"))  # test_loop.read_xwd
SIZES = {"256": (256, 256), "640x480": (640, 480), "1920x1080": (1920, 1080), "3840x2160": (3840, 2160)}


def frames_at(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def main() -> int:
    bundle, good, bad = Path(sys.argv[1]), cv2.imread(sys.argv[2]), cv2.imread(sys.argv[3])
    out = Path(sys.argv[4]) if len(sys.argv) > 4 else Path("benchmarks/results/overlay")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    for name, size in SIZES.items():
        src = tmp / name
        src.mkdir()
        cv2.imwrite(str(src / "0_good.png"), frames_at(good, size))
        cv2.imwrite(str(src / "1_defect.png"), frames_at(bad, size))
        rec = tmp / f"{name}.avi"
        subprocess.run([sys.executable, "-m", "edge_stpm.cli", "run", "--model", str(bundle), "--source", str(src),
                        "--headless", "--record", str(rec)], check=True, capture_output=True)
        cap = cv2.VideoCapture(str(rec))
        for label in ("ok", "ng"):
            ok, frame = cap.read()
            assert ok, f"no frame in {rec}"
            cv2.imwrite(str(out / f"video_{name}_{label}.png"), frame)
        print("video frames", name, frame.shape)
    if shutil.which("Xvfb") and shutil.which("xwd"):
        from test_loop import read_xwd

        for name, size in SIZES.items():
            src = tmp / f"win_{name}"
            src.mkdir()
            for i in range(90 if size[0] > 1000 else 600):  # the window stays up for a few seconds
                cv2.imwrite(str(src / f"{i:03d}.png"), frames_at(bad, size))
            display = ":96"
            xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", f"{max(size[0], 640)}x{max(size[1], 480)}x24"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1.0)
                env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb")
                run = subprocess.Popen([sys.executable, "-m", "edge_stpm.cli", "run", "--model", str(bundle), "--source",
                                        str(src)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(4.0)
                subprocess.run(["xwd", "-root", "-silent", "-out", str(tmp / "s.xwd")], env=env, check=True)
                run.wait(timeout=120)
                cv2.imwrite(str(out / f"window_{name}.png"), read_xwd(tmp / "s.xwd"))
                print("window", name)
            finally:
                xvfb.terminate()
                xvfb.wait(timeout=10)
    else:
        print("note: Xvfb/xwd missing: no window screenshots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
