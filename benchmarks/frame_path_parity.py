"""Visual parity of the device frame path with the host path, on real frames: the same frames through a bundle's
frame graph (ONNX Runtime, ``--frame-path device``) and through the host path (OpenCV fit, model graph, OpenCV
unfit and colour), finished the same way (contours on NG, colour bar, banner). Writes side-by-side screenshots
(host | device | |difference| × 16) and parity.json (mean absolute pixel difference per frame, share of pixels
that differ, score relative error).

    python3 benchmarks/frame_path_parity.py BUNDLE IMAGE... [--out DIR] [--size 640x480,1920x1080]

BUNDLE must hold frame graphs for the sizes (``edge-stpm export --frame-size 640x480,1920x1080``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from edge_stpm.contract.artifacts import parse_frame_size
from edge_stpm.common.images import read_image
from edge_stpm.runtime.inspector import Inspector


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("images", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/frame_path"))
    ap.add_argument("--size", default="640x480,1920x1080")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    device = Inspector.load(a.bundle, "onnxruntime", precision="fp32", frame_path="device")
    host = Inspector.load(a.bundle, "onnxruntime", precision="fp32", frame_path="host")
    rows = []
    for size in a.size.split(","):
        w, h = parse_frame_size(size)
        for path in a.images:
            frame = cv2.resize(read_image(path), (w, h), interpolation=cv2.INTER_AREA)
            rd, rh = device.inspect(frame), host.inspect(frame)
            if rd.path != "device":
                raise SystemExit(f"no frame graph for {w}x{h} in {a.bundle}")
            od, oh = rd.overlay(frame, text=["device path"]), rh.overlay(frame, text=["host path"])
            # compare the overlays with the same HUD text so only the colouring can differ
            cd, ch = rd.overlay(frame), rh.overlay(frame)
            d = np.abs(cd.astype(np.int16) - ch.astype(np.int16))
            rows.append({"frame": f"{w}x{h}", "image": f"{path.parent.name}/{path.name}", "verdict_host": rh.verdict,
                         "verdict_device": rd.verdict, "score_rel_err": abs(rd.score - rh.score) / abs(rh.score),
                         "mean_abs_diff": float(d.mean()), "max_abs_diff": int(d.max()),
                         "share_pixels_differing": float((d.max(axis=2) > 0).mean()),
                         "coloured_share": float((rh.anomaly_map >= 0.5 * rh.pixel_threshold).mean())})
            diff = np.clip(d.max(axis=2, keepdims=True).repeat(3, axis=2) * 16, 0, 255).astype(np.uint8)
            side = np.concatenate([oh, od, diff], axis=1)
            if w > 1000:
                side = cv2.resize(side, (side.shape[1] // 2, side.shape[0] // 2), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(a.out / f"parity_{w}x{h}_{path.parent.name}_{path.stem}.png"), side)
    (a.out / "parity.json").write_text(json.dumps(rows, indent=1) + "\n")
    for r in rows:
        print(f"{r['frame']} {r['image']}: {r['verdict_host']}/{r['verdict_device']} score rel {r['score_rel_err']:.1e}, "
              f"mean |diff| {r['mean_abs_diff']:.2e}, max {r['max_abs_diff']}, pixels differing "
              f"{100 * r['share_pixels_differing']:.4f} %, coloured {100 * r['coloured_share']:.1f} %")
    device.close()
    host.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
