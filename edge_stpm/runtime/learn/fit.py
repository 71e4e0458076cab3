"""``edge-stpm fit``: a memory model of a part from its good images, on the runtime install (no PyTorch).

The same recipe as ``train --head memory``, step for step, with the teacher pack's graphs in ONNX Runtime instead of
PyTorch: the same held-out split (seeded), the teacher's patch features of the training images, the same coreset
(``coreset.select``), the bank put into the pack's template graph (its two initializers), thresholds from the
held-out good images (``thresholds.calibrate``, the memory head's k), the no-defect check (``synthetic.proxy_auroc``),
the TensorRT rules, a self-test and a manifest. Everything is written under temporary names in the output folder's
parent and the folder appears only when complete: a failed or cancelled fit leaves nothing half-written.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import onnx
from onnx import numpy_helper

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import write_json
from edge_stpm.common.images import good_images, load_images
from edge_stpm.contract.artifacts import (
    SELFTEST,
    file_sha256,
    onnx_path,
    read_onnx_metadata,
    selftest_image,
    set_metadata,
    sidecar,
    write_bundle_readme,
    write_manifest,
)
from edge_stpm.contract.gates import GATES, gate_failures, parity_figures
from edge_stpm.contract.options import DEFAULT_BANK_MAX_MB, DEFAULT_CORESET, DEFAULT_CORESET_CHUNK
from edge_stpm.contract.tiles import TileGrid, from_meta, per_frame
from edge_stpm.contract.trt_rules import require_trt_ready
from edge_stpm.runtime.backends.onnxruntime_backend import OnnxBackend, open_session
from edge_stpm.runtime.learn import thresholds
from edge_stpm.runtime.learn.coreset import EXACT_MAX, bank_entries, method, select
from edge_stpm.runtime.learn.pack import BANK_SQ, BANK_T, FEATURES, TEACHER_JSON, Pack, need_template, read_pack
from edge_stpm.runtime.learn.quantize import DEFAULT_FLOAT_STAGES, check_count, quantize_int8
from edge_stpm.runtime.learn.synthetic import make, proxy_auroc

MIN_IMAGES = 5
FIT_PRECISIONS = ("fp32", "fp16", "int8")
INT8_CALIB_MAX = 300  # calibration images for INT8: the training images, a seeded sample of at most this many
VAL_FRACTION = 0.2
SELFTEST_IMAGES = 3
PROXY_MAX = 200  # the no-defect check scores at most this many held-out inputs (a tiled fit's 4x: a seeded sample)
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class FitConfig:
    teacher: Path
    data: Path
    out: Path
    coreset: float = DEFAULT_CORESET
    bank_max_mb: float = DEFAULT_BANK_MAX_MB
    chunk: int = DEFAULT_CORESET_CHUNK
    seed: int = 0
    val_fraction: float = VAL_FRACTION
    threads: int | None = None
    precisions: tuple[str, ...] = ("fp32",)  # fp32 always (the thresholds' and the gates' reference); fp16 optional
    tiles: TileGrid | None = None  # a tiled fit (contract/tiles.py): every image cut into this grid of tiles
    tiles_from_pack: bool = False  # with no tiles given: the grid of the bundle used as the teacher (a new version)
    exact_max: int = EXACT_MAX  # the exact coreset up to this many patches, the two-stage one above


def split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out image indices, training image indices), both sorted — ``train``'s split for the same seed."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


def rows(images: np.ndarray, tiles: TileGrid | None) -> np.ndarray:
    """Image indices → the rows of ``load_images``' output they fill (each image's tiles in a row)."""
    n = 1 if tiles is None else tiles.count
    return (np.asarray(images)[:, None] * n + np.arange(n)[None, :]).ravel()


def proxy_sample(n: int, seed: int) -> np.ndarray:
    """The held-out inputs the no-defect check uses: all up to ``PROXY_MAX``, else a seeded sample of that many (in
    order). Its synthetic anomalies cost five scorings per input: a 2×2 tiled fit of magnetic tile holds out 572
    tiles, whose check alone took ~5 of its 10 minutes."""
    if n <= PROXY_MAX:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, PROXY_MAX, replace=False))


def _session(path: Path, threads: int | None) -> Any:
    return open_session(path, threads, allow_gpu=True)[0]


def patches(pack: Pack, images: np.ndarray, threads: int | None, on: Callable[[int], None] | None = None) -> np.ndarray:
    """The teacher's patch features of uint8 ``images`` ``(n, S, S, 3)`` → ``(n·h·w, D)`` float32, image by image
    and row by row over the grid (the order ``train`` collects them in)."""
    sess = _session(pack.features, threads)
    name = sess.get_inputs()[0].name
    out = []
    for i in range(len(images)):
        f = sess.run(None, {name: images[i : i + 1]})[0]  # (1, D, h, w)
        out.append(np.ascontiguousarray(f[0].reshape(f.shape[1], -1).T, np.float32))
        if on is not None:
            on(1)
    return np.concatenate(out)


def bank_graph(pack: Pack, bank: np.ndarray, precision: str = "fp32") -> Any:
    """The pack's template graph for ``precision`` with ``bank`` ``(M, D)`` in its bank initializers (shapes
    inferred again)."""
    template = need_template(pack, precision)
    model = onnx.load(str(template))
    names = {pack.doc["template"]["bank_t"]: np.ascontiguousarray(bank.T, np.float32),
             pack.doc["template"]["bank_sq"]: (bank.astype(np.float32) ** 2).sum(axis=1).reshape(1, 1, -1)}
    found = 0
    for i, init in enumerate(model.graph.initializer):
        if init.name in names:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(names[init.name], init.name))
            found += 1
    if found != 2:
        raise UserError(f"{template}: the template has no {BANK_T} / {BANK_SQ} initializers: write the pack again")
    del model.graph.value_info[:]  # shapes that held the placeholder bank's size
    return model


def _metadata(model: Any, md: dict[str, Any]) -> None:
    set_metadata(model, md, "edge-stpm fit")


def _write_graph(model: Any, path: Path) -> None:
    onnx.checker.check_model(model, full_check=True)
    require_trt_ready(model, "the fitted graph")
    onnx.save(model, str(path))


def _score(path: Path, images: np.ndarray, threads: int | None) -> tuple[np.ndarray, np.ndarray]:
    b = OnnxBackend(path, threads)
    try:
        maps, scores = b.infer_any(images)
    finally:
        b.close()
    return np.asarray(maps, np.float32).reshape(len(images), *images.shape[1:3]), np.asarray(scores, np.float64)


def _selftest(out: Path, good: np.ndarray, threads: int | None,
              precisions: tuple[str, ...] = ("fp32",)) -> dict[str, Any]:
    """The bundle's self-test (as ``export`` writes it): a few held-out good images and one synthetic anomaly, scored
    by each graph written (``precisions``), with export's tolerances (FP32 0.01 of the threshold, FP16 its gate)."""
    imgs = np.concatenate([good[:SELFTEST_IMAGES], make(good[:1], "line", seed=0)[0]])
    names = []
    for i, img in enumerate(imgs):
        names.append(selftest_image(i))
        if not cv2.imwrite(str(out / names[-1]), img):
            raise UserError(f"cannot write the self-test image {out / names[-1]}")
    scores = {p: [float(s) for s in _score(onnx_path(out, p), imgs, threads)[1]] for p in precisions}
    doc = {"format": "edge-stpm-selftest", "images": names, "scores": scores, "batch": 1,
           "tolerance_threshold_units": {p: 0.01 if p == "fp32" else GATES[p]["score_err_max"] for p in precisions}}
    write_json(out / SELFTEST, doc)
    return doc


def _carry_pack(pack: Pack, out: Path, precisions: tuple[str, ...] = ("fp32",)) -> None:
    """The bundle carries its teacher pack: the feature graph, and its own graphs as the templates."""
    shutil.copy2(pack.features, out / FEATURES)
    model = onnx_path(out, "fp32").name
    template = {k: v for k, v in pack.doc["template"].items() if k != "fp16"} | {"file": model}
    template |= {"fp16": onnx_path(out, "fp16").name} if "fp16" in precisions else {}
    files = [FEATURES, model] + ([template["fp16"]] if "fp16" in precisions else [])
    doc = pack.doc | {"template": template, "sha256": {f: file_sha256(out / f) for f in files}}
    write_json(out / TEACHER_JSON, doc)


def _images(cfg: FitConfig, pack: Pack) -> tuple[list[Path], np.ndarray]:
    paths = good_images(Path(cfg.data))
    if len(paths) < MIN_IMAGES:
        raise UserError(f"only {len(paths)} good images in {cfg.data}: a fit needs at least {MIN_IMAGES} "
                        f"({int(cfg.val_fraction * 100)} % are held out to set the thresholds)")
    return paths, load_images(paths, pack.size, pack.doc["fit"], tiles=cfg.tiles)


def _check(cfg: FitConfig) -> None:
    if not 0 < cfg.coreset <= 1:
        raise UserError(f"--coreset must be above 0 and at most 1, not {cfg.coreset}")
    if not 0 < cfg.val_fraction < 1:
        raise UserError(f"the held-out share must be between 0 and 1, not {cfg.val_fraction}")
    if "fp32" not in cfg.precisions or not set(cfg.precisions) <= set(FIT_PRECISIONS):
        raise UserError(f"--precision must list fp32 and optionally fp16 and int8, e.g. fp32,fp16,int8 (FP32 is the "
                        f"reference of the thresholds and the gates), not {','.join(cfg.precisions)}")
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty: fit writes a new bundle folder")


def fit(cfg: FitConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Fit a memory model (see the module doc) into the bundle folder ``cfg.out``; returns the fit report."""
    _check(cfg)
    t0 = time.perf_counter()
    tell = progress or (lambda stage, done, total: None)
    pack = read_pack(cfg.teacher)
    if cfg.tiles is None and cfg.tiles_from_pack:
        cfg = replace(cfg, tiles=from_meta(read_onnx_metadata(pack.template)), tiles_from_pack=False)
    for prec in cfg.precisions:
        if prec != "int8":  # INT8 is quantized from the fitted FP32 graph, not from a template
            need_template(pack, prec)
    paths, images = _images(cfg, pack)
    val, train = split(len(paths), cfg.val_fraction, cfg.seed)
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        tell("teacher features", done[0], len(train) * (cfg.tiles.count if cfg.tiles else 1))

    feats = patches(pack, images[rows(train, cfg.tiles)], cfg.threads, step)
    t_feat = time.perf_counter()
    k = bank_entries(feats.shape[0], cfg.coreset, feats.shape[1], cfg.bank_max_mb)
    need_room(Path(cfg.out), pack, k)
    picked = [0]

    def pick(n: int) -> None:
        picked[0] += n
        tell("coreset", picked[0], k)

    bank = feats[select(feats, k, cfg.seed, cfg.chunk, pick, cfg.exact_max)]
    t_core = time.perf_counter()
    info = _fit_info(cfg, paths, val, train, pack) | {
        "coreset_method": method(feats.shape[0], k, cfg.chunk, cfg.exact_max), "patches": int(feats.shape[0])}
    calib = _calibration(images[rows(train, cfg.tiles)], cfg) if "int8" in cfg.precisions else None
    return publish(Path(cfg.out), lambda tmp: _build(cfg, pack, bank, images[rows(val, cfg.tiles)], tmp, info, calib),
                   {"features": t_feat - t0, "coreset": t_core - t_feat}, t0)


def publish(out: Path, build: Callable[[Path], dict[str, Any]], seconds: dict[str, float],
            t0: float) -> dict[str, Any]:
    """Run ``build`` into a hidden folder beside ``out`` (fit.json, with ``seconds`` and the total since ``t0``, and
    the manifest added), then rename it to ``out`` — which must not exist or be empty — so that ``out`` appears only
    complete; nothing is left on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.fit-", dir=out.parent))
    try:
        t1 = time.perf_counter()
        report = build(tmp)
        report["seconds"] = seconds | {"build": time.perf_counter() - t1, "total": time.perf_counter() - t0}
        write_json(tmp / "fit.json", report)
        write_manifest(tmp, {"backbone": report["backbone"], "image_size": report["image_size"],
                             "fit": report["fit"], "batch": 1, "checkpoint_sha256": report["bank_sha256"]})
        if out.exists():
            out.rmdir()  # empty (checked before)
        os.replace(tmp, out)
    except OSError as exc:  # a full disk (or a folder taken away) while writing: one line, nothing left
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(out.parent).free / 2**20
        raise UserError(f"cannot write the bundle into {out.parent} ({exc.strerror or exc}; {free:.0f} MB free): "
                        "nothing was written, the live model is untouched") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def need_room(out: Path, pack: Pack, entries: int) -> None:
    """Refuse before any work when the disk under ``out`` cannot hold the bundle: its graph (the template's size
    plus the bank), the teacher pack it carries and the self-test images, twice over for the graph (it is written
    twice)."""
    where = next((p for p in (out, *out.parents) if p.exists()), Path("/"))
    templates = [t for t in (pack.template, pack.template_for("fp16")) if t is not None]
    need = sum(2 * (t.stat().st_size + entries * pack.dims * 4) for t in templates) + pack.features.stat().st_size
    need += 2 * 2**20
    free = shutil.disk_usage(where).free
    if free < need:
        raise UserError(f"not enough room on the disk for the bundle in {out.parent}: about {need / 2**20:.0f} MB "
                        f"needed, {free / 2**20:.0f} MB free; nothing was written")


def _fit_info(cfg: FitConfig, paths: list[Path], val: np.ndarray, train: np.ndarray, pack: Pack) -> dict[str, Any]:
    grid = pack.doc["features"].get("grid", [0, 0])
    return {"teacher": str(cfg.teacher), "data": str(cfg.data), "images": len(paths), "held_out": len(val),
            "train_images": len(train), "patches_per_image": int(grid[0] * grid[1]), "coreset": cfg.coreset,
            "coreset_chunk": cfg.chunk, "seed": cfg.seed, "tiles": cfg.tiles.as_meta() if cfg.tiles else None,
            "val_images": [str(paths[i]) for i in val], "train_image_paths": [str(paths[i]) for i in train],
            "warnings": [w for w in (thresholds.few_held_out(len(val)),) if w]}


def _build(cfg: FitConfig, pack: Pack, bank: np.ndarray, good: np.ndarray, out: Path,
           info: dict[str, Any], calib: np.ndarray | None = None) -> dict[str, Any]:
    """Graph, thresholds (from the held-out ``good`` images), no-defect check, self-test, README and teacher pack of
    ``bank``, written into ``out``; returns the report (``info`` and what was made). With tiles, ``good`` holds
    the held-out images' tiles: the image threshold is set on each image's largest tile score (as ``train``)."""
    model = bank_graph(pack, bank)
    path = onnx_path(out, "fp32")
    md = {k: v for k, v in read_onnx_metadata(pack.template).items() if k != "tiles"}  # a bundle's own grid goes
    md |= {"tiles": cfg.tiles.as_meta()} if cfg.tiles else {}
    sha = hashlib.sha256(bank.tobytes()).hexdigest()
    memory = {"entries": int(bank.shape[0]), "dims": int(bank.shape[1]), "bytes": int(bank.size * 4)}
    _metadata(model, md | {"memory": memory, "checkpoint_sha256": sha})
    _write_graph(model, path)
    maps, scores = _score(path, good, cfg.threads)
    thr = thresholds.calibrate(per_frame(cfg.tiles, scores), maps, "logsigma", thresholds.default_k("memory"),
                               pixel_method=pack.doc["head"].get("pixel_method"))
    md = md | {"memory": memory, "checkpoint_sha256": sha,
               "thresholds": {"image": thr["image"], "pixel": thr["pixel"], "method": thr["method"],
                              "good_scores": thr["good_scores"], "score_scale": thr["score_scale"]}}
    _metadata(model, md)
    _write_graph(model, path)

    def infer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _score(path, x, cfg.threads)

    pick = proxy_sample(len(good), cfg.seed)
    check = proxy_auroc(infer, good[pick], scores[pick], seed=cfg.seed)
    report = info | {"memory": memory, "bank_sha256": sha, "thresholds": thr, "no_defect_check": check,
                     "backbone": pack.doc["backbone"], "image_size": pack.size, "fit": pack.doc["fit"]}
    fit_md = {"fit": {k: report[k] for k in ("images", "held_out", "coreset", "seed")}}
    write_json(sidecar(path), md | fit_md)
    graphs = {"fp32": {"file": path.name}}
    if "fp16" in cfg.precisions:
        graphs["fp16"] = _half(cfg, pack, bank, good, out, md, (maps, scores), fit_md)
    if "int8" in cfg.precisions and calib is not None:
        graphs["int8"] = _int8(cfg, out, md, good, calib, (maps, scores), fit_md)
    written = tuple(p for p in graphs if graphs[p].get("file"))
    _selftest(out, good, cfg.threads, written)
    write_bundle_readme(out, md, list(written))
    _carry_pack(pack, out, written)
    return report | {"graphs": graphs}


def _half(cfg: FitConfig, pack: Pack, bank: np.ndarray, good: np.ndarray, out: Path, md: dict[str, Any],
          ref: tuple[np.ndarray, np.ndarray], sidecar_extra: dict[str, Any]) -> dict[str, Any]:
    """The FP16 graph (the pack's FP16 template: teacher FP16, head FP32) with the same bank and thresholds, kept only
    if it passes ``export``'s FP16 gate against the FP32 graph on the held-out images (``export`` compares with
    PyTorch FP32, which the box has not); returns its parity, gate and file (None when it failed and was removed)."""
    model = bank_graph(pack, bank, "fp16")
    path = onnx_path(out, "fp16")
    md16 = md | {k: v for k, v in read_onnx_metadata(need_template(pack, "fp16")).items() if k == "precision"}
    _metadata(model, md16)
    _write_graph(model, path)
    return _keep(cfg, path, "fp16", md16 | sidecar_extra, good, ref)


def _keep(cfg: FitConfig, path: Path, prec: str, md: dict[str, Any], good: np.ndarray,
          ref: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Score the held-out images with the graph at ``path`` and keep it (with its sidecar ``md``) only if it passes
    ``prec``'s export gate against the FP32 graph's maps and scores ``ref``; removed otherwise. The report entry."""
    maps, scores = _score(path, good, cfg.threads)
    parity = parity_figures(maps, scores, ref[0], ref[1], float(md["thresholds"]["image"]))
    failures = gate_failures(prec, parity, None, None)
    if failures:
        path.unlink()
        return {"file": None, "parity_vs_fp32": parity, "gate": {"bounds": GATES[prec], "failures": failures}}
    write_json(sidecar(path), md)
    return {"file": path.name, "parity_vs_fp32": parity, "gate": {"bounds": GATES[prec], "failures": []}}


def _calibration(train: np.ndarray, cfg: FitConfig) -> np.ndarray:
    """INT8's calibration images: the training images (not the held-out ones the gate compares on), a seeded sample
    of at most ``INT8_CALIB_MAX``; at least ``quantize.MIN_CALIB`` (one line otherwise)."""
    check_count(len(train))
    if len(train) <= INT8_CALIB_MAX:
        return train
    pick = np.sort(np.random.default_rng(cfg.seed).choice(len(train), INT8_CALIB_MAX, replace=False))
    return train[pick]


def _int8(cfg: FitConfig, out: Path, md: dict[str, Any], good: np.ndarray, calib: np.ndarray,
          ref: tuple[np.ndarray, np.ndarray], sidecar_extra: dict[str, Any]) -> dict[str, Any]:
    """The INT8 graph: the fitted FP32 graph quantized with export's Q/DQ placement (``quantize.quantize_int8``,
    min-max ranges of ``calib``, stage 0 kept float), kept only if it passes export's INT8 gate against FP32."""
    path = onnx_path(out, "int8")
    md8 = md | {"precision": "int8", "calibration": {"source": "the fit's training images", "count": len(calib),
                                                     "method": "minmax", "float_stages": list(DEFAULT_FLOAT_STAGES)}}
    with tempfile.TemporaryDirectory(prefix=".calib-", dir=out) as cal:
        quantize_int8(onnx_path(out, "fp32"), path, calib, 1, md8, Path(cal) / "ranges.json", "minmax")
    return _keep(cfg, path, "int8", md8 | sidecar_extra, good, ref)
