"""``edge-stpm infer``: score image files, write overlays and a CSV/JSON summary."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import cv2
from rich.console import Console
from rich.table import Table

from edge_stpm.common.cells import safe_row
from edge_stpm.common.errors import UserError
from edge_stpm.common.files import ensure_dir, write_bytes, write_json
from edge_stpm.common.images import IMAGE_EXTS, crop_roi, list_images, read_image
from edge_stpm.common.progress import bar
from edge_stpm.runtime.inspector import Inspector


def expand(inputs: list[Path]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted)."""
    paths: list[Path] = []
    for p in inputs:
        if Path(p).is_dir():
            paths += list_images(Path(p))
        elif Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTS:
            paths.append(Path(p))
        else:
            raise UserError(f"not an image or folder: {p}")
    if not paths:
        raise UserError("no images to inspect")
    return paths


def infer_paths(inputs: list[Path], model: Path, out: Path, backend: str = "auto", threshold: float | None = None,
                overlays: bool = True, precision: str | None = None, threads: int | None = None,
                roi: tuple[int, int, int, int] | None = None) -> list[dict[str, Any]]:
    """Inspect image files (``roi`` crops x, y, w, h first); ``threshold`` is normalised (1.2 = 1.2 × stored)."""
    paths = expand(inputs)
    out = ensure_dir(Path(out))
    insp = Inspector.load(model, backend, threshold, precision, threads, verbose=True)
    rows = []
    with bar() as progress:
        task = progress.add_task("inspect", total=len(paths), info="")
        for p in paths:
            img = crop_roi(read_image(p), roi, p.name)
            r = insp.inspect(img)
            row = {"image": str(p), "score": r.score, "normalised_score": r.normalised_score,
                   "threshold": r.image_threshold, "verdict": r.verdict}
            if overlays:
                ov = out / f"{p.stem}_overlay.png"
                write_bytes(ov, cv2.imencode(".png", r.overlay(img))[1].tobytes())
                row["overlay"] = str(ov)
            rows.append(row)
            progress.advance(task)
    insp.close()
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(safe_row(r) for r in rows)
    write_bytes(out / "summary.csv", buf.getvalue().encode())
    write_json(out / "summary.json", {"model": str(model), "threshold": insp.image_threshold,
                                      "threshold_normalised": insp.threshold_scale, "images": rows})
    return rows


def print_infer(out: Console, inputs: list[Path], model: Path, out_dir: Path, backend: str, threshold: float | None,
                overlays: bool, precision: str | None, threads: int | None,
                roi: tuple[int, int, int, int] | None) -> None:
    """``edge-stpm infer``: inspect, then a table of the first 50 images and the NG count."""
    rows = infer_paths(inputs, model, out_dir, backend, threshold, overlays, precision=precision, threads=threads,
                       roi=roi)
    t = Table(title=f"{len(rows)} images")
    for c in ("image", "score", "normalised", "verdict"):
        t.add_column(c)
    for r in rows[:50]:
        t.add_row(r["image"], f"{r['score']:.4g}", f"{r['normalised_score']:.2f}", r["verdict"])
    out.print(t)
    ng = sum(r["verdict"] == "NG" for r in rows)
    out.print(f"{ng} NG of {len(rows)}; summary in {out_dir}/summary.csv")
