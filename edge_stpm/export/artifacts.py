"""Artefact layout and metadata: ``engines/NAME/model_<precision>.onnx`` with a JSON beside each file,
``calibration/NAME/`` for INT8 inputs; metadata both in ONNX ``metadata_props`` and in the JSON."""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from ..errors import UserError

PRECISIONS = ("fp32", "fp16", "int8")
INPUT_NAME = "image"
OUTPUT_NAMES = ("anomaly_map", "score")
METADATA_KEY = "edge_stpm"


def parse_precisions(text: str) -> list[str]:
    """'fp32,fp16' → ['fp32', 'fp16']; unknown names are refused."""
    items = [p.strip().lower() for p in text.split(",") if p.strip()]
    bad = [p for p in items if p not in PRECISIONS]
    if bad or not items:
        raise UserError(f"unknown precision {', '.join(bad) or repr(text)}; choose from {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(items))


def onnx_path(folder: Path, precision: str) -> Path:
    return Path(folder) / f"model_{precision}.onnx"


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
        "thresholds": {"image": thr["image"], "pixel": thr["pixel"], "method": thr["method"]},
        "checkpoint_sha256": ckpt_sha256,
        "versions": library_versions(),
    }


def read_onnx_metadata(path: Path) -> dict[str, Any]:
    """The edge-stpm metadata stored in an ONNX file's ``metadata_props``; UserError if absent or unreadable."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise UserError(f"cannot read ONNX file {path}: corrupt or not ONNX ({type(exc).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise UserError(f"{path} is not an edge-stpm graph (no '{METADATA_KEY}' metadata); export it with edge-stpm export")
    return json.loads(props[METADATA_KEY])
