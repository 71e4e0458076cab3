"""The artefact contract, torch-free: what ``export`` writes and every runtime reads.

- Graphs: ``BUNDLE/model_<precision>.onnx``, edge-stpm metadata in ONNX ``metadata_props`` and in a JSON beside
  each file. I/O: input ``image`` uint8 BGR NHWC ``(B, S, S, 3)``; outputs ``anomaly_map`` float32
  ``(B, 1, S, S)`` and ``score`` float32 ``(B,)``.
- Engines: ``BUNDLE/model_<precision>.engine`` = a self-describing file: the 8-byte magic ``ESTPMENG``, a
  little-endian uint32 length, that many bytes of JSON metadata, then TensorRT's serialized engine. A copied
  engine cannot lose its metadata. (A JSON sidecar is also written, for people; the header is what is read.)
- Bundle: the export folder is the unit copied to a box. ``manifest.json`` lists the sha256 of every file;
  a bundle whose files do not match it is refused.
"""
from __future__ import annotations

import hashlib
import json
import platform
import struct
from pathlib import Path
from typing import Any

import onnx

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import write_bytes, write_json, write_text
from edge_stpm.contract.scale import ScoreScale
from edge_stpm.contract.schema import GRAPH, MANIFEST as MANIFEST_SCHEMA, check

PRECISIONS = ("fp32", "fp16", "int8")
INPUT_NAME = "image"
OUTPUT_NAMES = ("anomaly_map", "score")
METADATA_KEY = "edge_stpm"
MANIFEST = "manifest.json"
SELFTEST = "selftest.json"  # reference images and every graph's scores on them (export writes, the box checks)


def selftest_image(i: int) -> str:
    return f"selftest_{i:02d}.png"
ENGINE_MAGIC = b"ESTPMENG"
# the device frame path (``framepath.FramePipeline``): camera frame in, overlay out, one graph per frame size
FRAME_INPUTS = ("frame", "index_scale")
FRAME_OUTPUTS = ("anomaly_map", "score", "overlay")
BUNDLE_FORMAT = "edge-stpm-bundle"


def parse_precisions(text: str) -> list[str]:
    """'fp32,fp16' → ['fp32', 'fp16']; unknown names are refused."""
    items = [p.strip().lower() for p in text.split(",") if p.strip()]
    bad = [p for p in items if p not in PRECISIONS]
    if bad or not items:
        raise UserError(f"unknown precision {', '.join(bad) or repr(text)}; choose from {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(items))


def onnx_path(folder: Path, precision: str) -> Path:
    return Path(folder) / f"model_{precision}.onnx"


def engine_path(folder: Path, precision: str) -> Path:
    return Path(folder) / f"model_{precision}.engine"


def parse_frame_size(text: str) -> tuple[int, int]:
    """'640x480' → (640, 480) (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"frame size {text!r} is not WIDTHxHEIGHT, e.g. 640x480") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise UserError(f"frame size {text!r} out of range (16 to 8192 pixels a side)")
    return w, h


def frame_onnx_path(folder: Path, precision: str, width: int, height: int) -> Path:
    return Path(folder) / f"frame_{width}x{height}_{precision}.onnx"


def frame_engine_path(folder: Path, precision: str, width: int, height: int) -> Path:
    return Path(folder) / f"frame_{width}x{height}_{precision}.engine"


def frame_metadata(md: dict[str, Any], width: int, height: int) -> dict[str, Any]:
    """A model graph's metadata turned into its frame graph's: batch 1, the frame's size, the frame I/O."""
    return md | {
        "kind": "frame", "batch": 1, "frame": {"width": int(width), "height": int(height)},
        "input": {"name": FRAME_INPUTS[0], "dtype": "uint8", "layout": "NHWC", "colour": "BGR",
                  "shape": [1, int(height), int(width), 3]},
        "inputs": {FRAME_INPUTS[1]: "float32 (1,): 255 / (2 · (pixel threshold − pixel zero)), see "
                                    "overlay.index_scale; the pixel zero of the score scale is inside the graph"},
        "pixel_zero": ScoreScale.of(md["thresholds"]).pixel_zero,
        "outputs": {"anomaly_map": "float32 (1,1,S,S) at model resolution", "score": "float32 (1,)",
                    "overlay": "uint8 BGR (1,H,W,3): colour near/above the pixel threshold, blended"},
    }


def sidecar(path: Path) -> Path:
    """The JSON metadata file beside an artefact: ``x.onnx`` → ``x.json``, ``x.engine`` → ``x.engine.json``."""
    path = Path(path)
    return path.with_suffix(".json") if path.suffix == ".onnx" else path.with_name(path.name + ".json")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("edge_stpm", "torch", "onnx", "onnxruntime", "numpy", "cv2"):
        try:
            out[name] = str(__import__(name).__version__)
        except Exception:  # an absent optional library is simply not listed
            continue
    return out


def graph_metadata(ck_meta: dict[str, Any], precision: str, batch: int, ckpt_sha256: str) -> dict[str, Any]:
    """What travels with every exported graph (and engine): enough to run it and to check it belongs."""
    thr = ck_meta["thresholds"]
    return {
        "format": "edge-stpm-graph", "format_version": 1,
        "backbone": ck_meta["backbone"], "image_size": ck_meta["image_size"], "fit": ck_meta["fit"],
        "batch": int(batch), "precision": precision,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "colour": "BGR",
                  "shape": [int(batch), ck_meta["image_size"], ck_meta["image_size"], 3]},
        "outputs": {"anomaly_map": "float32 (B,1,H,W)", "score": "float32 (B,)"},
        "normalisation": {"mean": ck_meta["mean"], "std": ck_meta["std"], "inside_graph": True},
        "smoothing_sigma": float(ck_meta.get("smoothing_sigma", 0.0)),
        "input_blur": float(ck_meta.get("input_blur", 0.0)),  # σ (model pixels) of the in-graph input blur
        "score_top_percent": float(ck_meta.get("score_top_percent", 0.0)),
        "map_combine": "weighted_sum" if ck_meta.get("level_weights") else "product",
        "level_weights": ck_meta.get("level_weights"),
        "head": ck_meta.get("head", "stpm"),
        "head_weights": ck_meta.get("head_weights"),
        "memory": ck_meta.get("memory"),
        "tiles": ck_meta.get("tiles"),  # the tiled fit (contract/tiles.py), None for the whole frame
        # good_scores: the held-out good images' score figures (p50, p95…): the box's drift tracking compares with them
        "thresholds": {"image": thr["image"], "pixel": thr["pixel"], "method": thr["method"]}
                      | ({"good_scores": thr["good_scores"]} if thr.get("good_scores") else {})
                      | ({"score_scale": thr["score_scale"]} if thr.get("score_scale") else {}),
        "checkpoint_sha256": ckpt_sha256,
        "versions": library_versions(),
    }


def read_onnx_metadata(path: Path) -> dict[str, Any]:
    """The edge-stpm metadata stored in an ONNX file's ``metadata_props``; UserError if absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise UserError(f"cannot read ONNX file {path}: corrupt or not ONNX ({type(exc).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise UserError(f"{path} is not an edge-stpm graph (no '{METADATA_KEY}' metadata); export it with "
                        "edge-stpm export")
    try:
        md = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError:
        raise UserError(f"{path}: its '{METADATA_KEY}' metadata is not JSON; re-export it with edge-stpm "
                        "export") from None
    return check(md, GRAPH, f"{path} metadata", "re-export it with edge-stpm export")


# --- engine files -------------------------------------------------------------------------------------------

def pack_engine(metadata: dict[str, Any], engine: bytes) -> bytes:
    """Magic + uint32 LE length + JSON metadata + the serialized TensorRT engine."""
    head = json.dumps(metadata, sort_keys=True).encode("utf-8")
    return ENGINE_MAGIC + struct.pack("<I", len(head)) + head + bytes(engine)


def unpack_engine(blob: bytes) -> tuple[dict[str, Any] | None, bytes]:
    """(metadata, engine bytes) of a self-describing engine; (None, blob) for a plain TensorRT plan."""
    if not blob.startswith(ENGINE_MAGIC) or len(blob) < len(ENGINE_MAGIC) + 4:
        return None, blob
    n = struct.unpack("<I", blob[len(ENGINE_MAGIC) : len(ENGINE_MAGIC) + 4])[0]
    start = len(ENGINE_MAGIC) + 4
    if start + n > len(blob):
        raise UserError("engine header is truncated: the file is damaged, rebuild it with edge-stpm build-engine")
    try:
        md = json.loads(blob[start : start + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError("engine header is not valid JSON: the file is damaged, rebuild it with edge-stpm "
                        "build-engine") from None
    return md, blob[start + n :]


def write_engine(path: Path, metadata: dict[str, Any], engine: bytes) -> Path:
    """Write a self-describing engine (atomically) and its human-readable JSON sidecar."""
    write_bytes(Path(path), pack_engine(metadata, engine))
    write_json(sidecar(Path(path)), metadata)
    return Path(path)


def read_engine(path: Path) -> tuple[dict[str, Any], bytes]:
    """(metadata, engine bytes): from the header, else from the JSON sidecar of an older plain engine."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"engine not found: {path}")
    try:
        md, engine = unpack_engine(path.read_bytes())
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    fix = "rebuild it with edge-stpm build-engine"
    if md is not None:
        return check(md, GRAPH, f"{path} header", fix), engine
    meta_path = sidecar(path)
    if not meta_path.is_file():
        raise UserError(f"{path} has no edge-stpm metadata (no header, no {meta_path.name}): rebuild with "
                        "edge-stpm build-engine")
    try:
        md = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"cannot read engine metadata {meta_path}: rebuild with edge-stpm build-engine") from None
    return check(md, GRAPH, str(meta_path), fix), engine


def engine_metadata_only(path: Path) -> dict[str, Any]:
    return read_engine(path)[0]


# --- bundles ------------------------------------------------------------------------------------------------

def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_sha256(path: Path) -> str:
    """The identity of a model as the record keeps it: a file's sha256, or a bundle's manifest's (which lists
    the sha256 of every file in it). A model on a Triton server is named by its URL (``triton:grpc://…``; the
    served graph's own sha256 is in the server's model config)."""
    text = str(path)
    if text.startswith(("grpc:/", "http:/")):
        return "triton:" + text.replace(":/", "://", 1) if "://" not in text else "triton:" + text
    path = Path(path)
    target = path / MANIFEST if path.is_dir() else path
    return file_sha256(target) if target.is_file() else "unknown"


def _bundle_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))


def write_manifest(folder: Path, extra: dict[str, Any] | None = None) -> Path:
    """(Re)write ``manifest.json``: sha256 and size of every file in the bundle folder."""
    folder = Path(folder)
    old = read_manifest(folder) if (folder / MANIFEST).is_file() else {}
    files = {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in _bundle_files(folder)}
    md = {"format": BUNDLE_FORMAT, "format_version": 1} | {k: v for k, v in old.items() if k not in ("files",)}
    md |= (extra or {}) | {"files": files}
    return write_json(folder / MANIFEST, md)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        md = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"cannot read {path}: re-export the bundle with edge-stpm export") from None
    if not isinstance(md, dict) or md.get("format") != BUNDLE_FORMAT:
        raise UserError(f"{path} is not an edge-stpm bundle manifest")
    return check(md, MANIFEST_SCHEMA, str(path), "re-export the bundle with edge-stpm export")


def is_bundle(folder: Path) -> bool:
    return Path(folder).is_dir() and (Path(folder) / MANIFEST).is_file()


def verify_bundle(folder: Path) -> dict[str, Any]:
    """Check every file the manifest lists (present, same sha256); returns the manifest. One UserError otherwise."""
    folder = Path(folder)
    md = read_manifest(folder)
    for name, entry in md["files"].items():
        p = folder / name
        if not p.is_file():
            raise UserError(f"bundle {folder} is incomplete: {name} is listed in {MANIFEST} but missing; copy the "
                            "whole folder again")
        if p.stat().st_size != entry["bytes"] or file_sha256(p) != entry["sha256"]:
            raise UserError(f"bundle {folder}: {name} does not match {MANIFEST} (changed or damaged in transfer); "
                            "copy it again or re-export")
    return md


def bundle_readme(md: dict[str, Any], graphs: list[str]) -> str:
    """The short README written into a bundle: what is in it and the commands to run on the box."""
    return "\n".join([
        "# edge-stpm bundle", "",
        f"Model: {md['backbone']} {md['image_size']}², fit `{md['fit']}`, "
        f"thresholds image {md['thresholds']['image']:.6g} / "
        f"pixel {md['thresholds']['pixel']:.6g} ({md['thresholds']['method']}). Graphs: {', '.join(graphs)}.", "",
        head_line(md), "", *tiles_lines(md),
        "Copy this whole folder to the box. `manifest.json` holds the sha256 of every file; a bundle whose files do",
        "not match it is refused.", "",
        "On the box (runtime install, no torch needed): `pip install edge-stpm` (see the project README for "
        "Jetson).", "",
        "```bash",
        "edge-stpm build-engine --model THIS_FOLDER --precision fp16   # optional: TensorRT engine for this GPU",
        "edge-stpm run --model THIS_FOLDER --camera 0                  # picks the best runnable artefact",
        "edge-stpm infer images/ --model THIS_FOLDER",
        "edge-stpm bench --model THIS_FOLDER",
        "```", "",
    ])


def head_line(md: dict[str, Any]) -> str:
    """One sentence on the head: STPM's student, or the memory bank's size (entries × dims, MB inside the graph)."""
    head, mem = md.get("head", "stpm"), md.get("memory")
    if head == "stpm" or not mem:
        return "Head: STPM (teacher and student in the graph)."
    size = f"{mem['entries']} entries × {mem['dims']} dims, {mem['bytes'] / 2**20:.1f} MB float32 inside every graph"
    return ("Head: memory bank (nearest neighbour over the teacher's good patches; " + size + ")." if head == "memory"
            else "Head: STPM and memory bank, maps added (bank: " + size + ").")


def tiles_lines(md: dict[str, Any]) -> list[str]:
    """For a tiled fit: what a frame costs (its tiles, one batch) and that the host cuts and stitches them."""
    t = md.get("tiles")
    if not t:
        return []
    n = t["rows"] * t["cols"]
    return [f"Tiled fit: every frame is cut into {t['rows']}x{t['cols']} tiles ({t['overlap'] * 100:g} % overlap), "
            f"each fitted to {md['image_size']}²; a frame costs {n} model inputs, inferred as one batch; the maps are "
            "stitched on the host (no device frame path).", ""]


def write_bundle_readme(folder: Path, md: dict[str, Any], graphs: list[str]) -> Path:
    return write_text(Path(folder) / "README.md", bundle_readme(md, graphs))


def set_metadata(model: onnx.ModelProto, metadata: dict[str, Any], producer: str = "edge-stpm") -> None:
    """Store metadata as JSON under ``edge_stpm`` plus a few flat keys for tools that list props."""
    del model.metadata_props[:]
    flat = {METADATA_KEY: json.dumps(metadata), "backbone": metadata["backbone"], "precision": metadata["precision"],
            "image_size": str(metadata["image_size"]), "image_threshold": repr(metadata["thresholds"]["image"])}
    onnx.helper.set_model_props(model, flat)
    model.producer_name = producer
