"""``edge-stpm export``: a checkpoint → FP32 / FP16 / INT8 ONNX graphs, each checked against PyTorch."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
import re
import time
from pathlib import Path
from typing import Any, NoReturn

import cv2
import numpy as np
import torch

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import ensure_dir, output_dir, write_json, write_text
from edge_stpm.common.images import fit_image, good_images, labelled_test_images, load_images, read_image
from edge_stpm.common.progress import bar, console
from edge_stpm.contract import tiles
from edge_stpm.contract.artifacts import (
    MANIFEST,
    SELFTEST,
    frame_metadata,
    frame_onnx_path,
    graph_metadata,
    onnx_path,
    selftest_image,
    sidecar,
    write_bundle_readme,
    write_manifest,
)
from edge_stpm.contract.gates import FP32_MAX_REL_L2, GATES, MAX_AUROC_DROP, gate_failures, parity_figures
from edge_stpm.runtime.backends.onnxruntime_backend import OnnxBackend, OnnxFrameRunner
from edge_stpm.runtime.learn.quantize import DEFAULT_FLOAT_STAGES, check_count, quantize_int8
from edge_stpm.runtime.learn.synthetic import make
from edge_stpm.training import checkpoint
from edge_stpm.training.evaluate import compute_metrics, frame_results, test_inputs
from edge_stpm.training.export.onnx_graphs import export_frame_onnx, export_onnx
from edge_stpm.training.export.teacher_pack import bundle_pack

CANDIDATE = re.compile(r"^\.(model|frame)_.+\.candidate\.onnx$")  # a graph written, not yet checked and renamed

_WARNED: set[str] = set()  # warnings already printed in this process (bench exports once per row)


def _existing(paths: list[str]) -> list[Path]:
    return [Path(p) for p in paths if Path(p).is_file()]


def _keep_bundle_consistent(out: Path, committed: list[str]) -> None:
    """After a failed export: if graphs were already replaced, rewrite the manifest so the folder still verifies."""
    if committed and (Path(out) / MANIFEST).is_file():
        write_manifest(out)


def _frame_graphs(pipe: Any, meta: dict[str, Any], sha: str, precisions: list[str], sizes: Any, out: Path,
                  parity_paths: list[Path], committed: list[str], force: bool) -> dict[str, Any]:
    """Frame graphs per (size, precision), each checked on the parity images resized to the frame against the
    PyTorch FP32 host path (fit on the host, then the model): the same bounds as the model graphs."""
    raw = [read_image(p) for p in parity_paths]
    entries: dict[str, Any] = {}
    for w, h in sizes:
        frames = [cv2.resize(r, (w, h), interpolation=cv2.INTER_AREA) for r in raw]
        with torch.no_grad():
            ref_maps, ref_scores = (t.numpy() for t in pipe(torch.from_numpy(np.stack(
                [fit_image(f, meta["image_size"], meta["fit"]) for f in frames]))))
        for prec in precisions:
            final = frame_onnx_path(out, prec, w, h)
            path = final.with_name(f".{final.stem}.candidate.onnx")  # CANDIDATE: a killed export's is cleaned next time
            md = frame_metadata(graph_metadata(meta, prec, 1, sha), w, h)
            t0 = time.perf_counter()
            export_frame_onnx(pipe, prec, (h, w), meta["fit"], path, md)
            runner = OnnxFrameRunner(path, allow_gpu=False)
            got = [runner.run(f, 1.0) for f in frames]
            maps, scores = np.stack([g[0] for g in got]), np.array([g[1] for g in got])
            parity = parity_figures(maps, scores, ref_maps[:, 0], ref_scores, float(meta["thresholds"]["image"]))
            failures = ([f"map_rel_l2 {parity['map_rel_l2']:.3g} > {FP32_MAX_REL_L2:g}"]
                        if prec == "fp32" and not parity["map_rel_l2"] <= FP32_MAX_REL_L2
                        else gate_failures(prec, parity, None, None))
            if failures and not force:
                path.unlink(missing_ok=True)
                _keep_bundle_consistent(out, committed)
                raise UserError(f"the {prec.upper()} frame graph {final.name} disagrees with the host path: "
                                + "; ".join(failures) + " (--force writes it anyway)")
            os.replace(path, final)
            committed.append(final.name)
            entry = {"path": str(final), "bytes": final.stat().st_size, "parity_vs_host_path": parity,
                     "seconds": time.perf_counter() - t0, "gate_failures_forced": failures}
            write_json(sidecar(final), md | {"export": entry})
            entries[final.stem] = entry
    return entries


SELFTEST_IMAGES = 3  # held-out good images; one synthetic anomaly of the first is added (a score above threshold)


def write_selftest(out: Path, parity_imgs: np.ndarray, precisions: list[str], batch: int) -> dict[str, Any]:
    """The bundle's self-test: a few model-size reference images (PNG, lossless) and every graph's scores on them,
    which a box checks before the bundle goes live (``runtime/station/store.py``), within the precision's score
    tolerance in units of the image threshold (FP32 0.01 — another CPU or GPU; FP16 / INT8: their export gates)."""
    good = parity_imgs[:SELFTEST_IMAGES]
    imgs = np.concatenate([good, make(good[:1], "line", seed=0)[0]])
    names = []
    for i, img in enumerate(imgs):
        names.append(selftest_image(i))
        if not cv2.imwrite(str(out / names[-1]), img):
            raise UserError(f"cannot write the self-test image {out / names[-1]}")
    scores = {}
    for prec in precisions:
        b = OnnxBackend(onnx_path(out, prec), allow_gpu=False)
        scores[prec] = [float(x) for x in b.infer_any(imgs)[1]]
        b.close()
    doc = {"format": "edge-stpm-selftest", "images": names, "scores": scores, "batch": batch,
           "tolerance_threshold_units": {"fp32": 0.01} | {p: GATES[p]["score_err_max"] for p in GATES}}
    write_json(out / SELFTEST, doc)
    return doc


def calibration_paths(meta: dict[str, Any], calib: Path | None) -> tuple[list[Path], str]:
    if calib is not None:
        return good_images(calib), str(calib)
    paths = _existing(meta.get("training", {}).get("train_images", []))
    if not paths:
        raise UserError("the checkpoint's training images are not on this machine: pass --calib DIR of good images")
    return paths, "checkpoint training images"


def _int8_candidate(out: Path, path: Path, md: dict[str, Any], cal_paths: list[Path], cal_source: str, batch: int,
                    size: int, fit: str, calib_method: str, calib_root: Path, float_stages: tuple[int, ...],
                    quiet: bool) -> dict[str, Any]:
    """The INT8 candidate graph at ``path``, calibrated on ``cal_paths`` (list, ranges and stats kept in
    ``calib_root/<bundle name>/``); ``md`` gains its calibration entry. Returns the Q/DQ summary."""
    cal_dir = ensure_dir(Path(calib_root) / out.name)
    write_text(cal_dir / "images.txt", "\n".join(str(p) for p in cal_paths) + "\n")
    cache = cal_dir / f"ranges_{calib_method}_b{batch}.json"
    md["calibration"] = {"source": cal_source, "count": len(cal_paths), "method": calib_method,
                         "float_stages": list(float_stages), "list": str(cal_dir / "images.txt"), "ranges": str(cache)}
    with bar(quiet) as progress:
        task = progress.add_task("decode calibration images", total=len(cal_paths), info="")
        cal_imgs = load_images(cal_paths, size, fit, on_done=lambda n: progress.advance(task, n),
                               tiles=tiles.from_meta(md))
        reuse = cache.is_file()
        task = progress.add_task(f"calibrate int8 ({calib_method})", total=0 if reuse else len(cal_paths),
                                 info="reusing saved ranges" if reuse else "")
        summary = quantize_int8(onnx_path(out, "fp32"), path, cal_imgs, batch, md, cache, calib_method,
                                on_batch=lambda n: progress.advance(task, n), float_stages=float_stages)
    scales = summary.pop("activation_scales")
    write_json(cal_dir / "stats.json", {"count": len(cal_paths), "method": calib_method, "batch": batch,
                                        "activation_scales": scales, **summary})
    return summary


def _test_metrics(backend: Any, test: dict[str, Any], meta: dict[str, Any], prec: str,
                  quiet: bool) -> dict[str, Any]:
    """A candidate graph's figures on the labelled test split (overall and per defect)."""
    imgs = test["inputs"]
    with bar(quiet) as progress:
        task = progress.add_task(f"test split, {prec}", total=len(imgs), info="")
        res = []
        for i in range(0, len(imgs), 16):
            res.append(backend.infer_any(imgs[i : i + 16]))
            progress.advance(task, min(16, len(imgs) - i))
    tm, ts = frame_results(test, meta, np.concatenate([r[0] for r in res]), np.concatenate([r[1] for r in res]))
    m = compute_metrics(tm, ts, test["labels"], test["masks"], test["defects"])
    return m["overall"] | {"per_defect": m["per_defect"]}


@dataclass
class _Run:
    """What every graph of one export shares: the pipeline, the bundle folder, the parity images and PyTorch's maps
    and scores of them (the reference), the labelled test set (``--data``), INT8's calibration images."""

    pipe: Any
    meta: dict[str, Any]
    sha: str
    out: Path
    batch: int
    parity_imgs: np.ndarray
    ref: tuple[np.ndarray, np.ndarray]
    test: dict[str, Any] | None
    cal: tuple[list[Path], str]
    force: bool
    quiet: bool
    committed: list[str] = field(default_factory=list)


def export(ckpt: Path, precisions: list[str], out: Path, batch: int = 1, calib: Path | None = None,
           calib_count: int = 300, calib_method: str = "minmax", calib_root: Path = Path("calibration"),
           data: Path | None = None, parity_count: int = 16, seed: int = 0, quiet: bool = False,
           float_stages: tuple[int, ...] = DEFAULT_FLOAT_STAGES, force: bool = False,
           frame_sizes: list[tuple[int, int]] | tuple[()] = ()) -> dict[str, Any]:
    """Export the requested graphs into ``out`` (FP32 always, as the reference); returns the export report.

    FP16 and INT8 graphs must pass their precision gate (``GATES``; with ``data`` also ≤ 1 AUROC point below FP32)
    or they are removed again and the export fails, saying by how much — unless ``force``. ``frame_sizes``
    (width, height): also the device frame-path graphs (``framepath``) for those camera sizes, FP32/FP16 only.
    """
    if batch < 1:
        raise UserError("--batch must be at least 1")
    pipe, meta = checkpoint.load_pipeline(Path(ckpt))
    out = output_dir(Path(out), also=(CANDIDATE,))
    sha = checkpoint.file_sha256(Path(ckpt))
    cal = _calibration_set(meta, calib, calib_count, seed) if "int8" in precisions else ([], "")
    parity_paths, grid = _parity_set(meta, cal[0], calib, parity_count, frame_sizes)
    parity_imgs = load_images(parity_paths, meta["image_size"], meta["fit"], tiles=grid)
    with torch.no_grad():
        ref_maps, ref_scores = (t.numpy() for t in pipe(torch.from_numpy(parity_imgs)))
    run = _Run(pipe, meta, sha, out, batch, parity_imgs, (ref_maps[:, 0], ref_scores), _test_set(data, meta, quiet),
               cal, force, quiet)
    report: dict[str, Any] = {"checkpoint": str(ckpt), "checkpoint_sha256": sha, "batch": batch, "graphs": {}}
    order = ["fp32"] + [p for p in precisions if p != "fp32"]
    for prec in order:
        report["graphs"][prec] = _one_graph(run, prec, report["graphs"].get("fp32", {}).get("test"),
                                            (calib_method, calib_root, float_stages))
    report["graphs"] = {p: report["graphs"][p] for p in order if p in precisions or p == "fp32"}
    if frame_sizes:
        report["frame_graphs"] = _frame_graphs(pipe, meta, sha, [p for p in order if p != "int8"], frame_sizes, out,
                                               parity_paths, run.committed, force)
    report["selftest"] = write_selftest(out, parity_imgs, list(report["graphs"]), batch)
    report["teacher_pack"] = bundle_pack(pipe, meta, out) is not None
    write_json(out / "export.json", report)
    write_bundle_readme(out, graph_metadata(meta, "fp32", batch, sha), list(report["graphs"]))
    write_manifest(out, {"backbone": meta["backbone"], "image_size": meta["image_size"], "fit": meta["fit"],
                         "batch": batch, "checkpoint_sha256": sha})
    return report


def _calibration_set(meta: dict[str, Any], calib: Path | None, calib_count: int, seed: int) -> tuple[list[Path], str]:
    """INT8's calibration images (at most ``calib_count``, a seeded sample) and where they came from; a warning once
    per process when they are few."""
    cal_paths, cal_source = calibration_paths(meta, calib)
    if len(cal_paths) > calib_count:
        rng = np.random.default_rng(seed)
        cal_paths = [cal_paths[i] for i in np.sort(rng.choice(len(cal_paths), calib_count, replace=False))]
    warning = check_count(len(cal_paths))
    if warning and warning not in _WARNED:
        _WARNED.add(warning)
        console.print(f"[yellow]warning: {warning}")
    return cal_paths, cal_source


def _parity_set(meta: dict[str, Any], cal_paths: list[Path], calib: Path | None, parity_count: int,
                frame_sizes: list[tuple[int, int]] | tuple[()]) -> tuple[list[Path], Any]:
    """The held-out good images every graph is compared on (the checkpoint's, else calibration images), and the tile
    grid (a tiled fit refuses ``--frame-size``)."""
    parity_paths = _existing(meta.get("training", {}).get("val_images", []))[:parity_count] or cal_paths[:parity_count]
    if not parity_paths:
        if calib is None:
            raise UserError("no images for the parity check on this machine: pass --calib DIR of good images")
        parity_paths = good_images(calib)[:parity_count]
    grid = tiles.from_meta(meta)
    if grid is not None and frame_sizes:
        raise UserError(f"--frame-size: the device frame path fits one square and this model has a tiled fit "
                        f"({grid.describe()}); its tiles are cut and stitched on the host: export without --frame-size")
    return parity_paths, grid


def _test_set(data: Path | None, meta: dict[str, Any], quiet: bool) -> dict[str, Any] | None:
    if data is None:
        return None
    items = labelled_test_images(Path(data))
    return test_inputs(items, meta, quiet) | {"labels": np.array([i.label for i in items]),
                                              "defects": np.array([i.defect for i in items])}


def _one_graph(run: _Run, prec: str, fp32_test: dict[str, Any] | None,
               int8: tuple[str, Path, tuple[int, ...]]) -> dict[str, Any]:
    """Write ``prec``'s graph under a hidden candidate name, compare it with PyTorch on the parity images (and the
    test set), apply its gate, and only then rename it onto ``model_<prec>.onnx``: a failed export never removes or
    half-replaces a graph already in the bundle. Returns the graph's report entry."""
    t0 = time.perf_counter()
    md = graph_metadata(run.meta, prec, run.batch, run.sha)
    final = onnx_path(run.out, prec)
    path = final.with_name(f".{final.stem}.candidate.onnx")  # CANDIDATE: a killed export's is cleaned next time
    extra: dict[str, Any] = {}
    if prec == "int8":
        extra["qdq"] = _int8_candidate(run.out, path, md, run.cal[0], run.cal[1], run.batch, run.meta["image_size"],
                                       run.meta["fit"], *int8, run.quiet)
    else:
        export_onnx(run.pipe, prec, run.batch, path, md)
    backend = OnnxBackend(path, allow_gpu=False)
    maps, scores = backend.infer_any(run.parity_imgs)
    parity = parity_figures(maps, scores, *run.ref, float(run.meta["thresholds"]["image"]))
    if prec == "fp32" and not parity["map_rel_l2"] <= FP32_MAX_REL_L2:
        _refuse(run, path, f"FP32 ONNX graph disagrees with PyTorch (map relative L2 {parity['map_rel_l2']:.2e} > "
                           f"{FP32_MAX_REL_L2:.0e}); not written")
    entry: dict[str, Any] = {"path": str(final), "bytes": path.stat().st_size, "parity_vs_pytorch": parity,
                             "seconds": time.perf_counter() - t0, **extra}
    if run.test is not None:
        entry["test"] = _test_metrics(backend, run.test, run.meta, prec, run.quiet)
    failures = gate_failures(prec, parity, entry.get("test"), fp32_test)
    entry["gate"] = {"bounds": GATES.get(prec, {}), "max_auroc_drop": MAX_AUROC_DROP, "failures": failures,
                     "forced": bool(failures and run.force)}
    if failures and not run.force:
        _refuse(run, path, f"the {prec.upper()} graph misses its precision gate on held-out good images: "
                           + "; ".join(failures) + f"; not written, any earlier {final.name} left as it was "
                           "(--force writes it anyway)")
    os.replace(path, final)
    run.committed.append(final.name)
    write_json(sidecar(final), md | {"export": entry})
    return entry


def _refuse(run: _Run, candidate: Path, why: str) -> NoReturn:
    """Remove a candidate graph that failed, keep the bundle consistent, and fail the export in one line."""
    candidate.unlink(missing_ok=True)
    _keep_bundle_consistent(run.out, run.committed)
    raise UserError(why)
