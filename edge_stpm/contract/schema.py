"""The schemas of the files edge-stpm reads back — a bundle's manifest, a graph's metadata (ONNX metadata_props,
JSON sidecars, a model config's parameter on a Triton server), an engine's header, a checkpoint's fields — as JSON
Schema, checked with ``jsonschema`` before any field is used. A deviation is one UserError naming the file and the
field (``manifest.json: files.model_fp32.onnx.sha256: 12 is not of type 'string'``), never a KeyError/TypeError
later. Torch-free (the contract layer); the checkpoint's weight tensors are checked by ``checkpoint.read``.

Required are the fields every reader uses; fields written by later versions (smoothing, image score, level
weights) are optional, so bundles of earlier rounds still load, but checked when present."""
from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from edge_stpm.common.errors import UserError
from edge_stpm.contract.options import BACKBONE_NAMES, FIT_NAMES, HEAD_NAMES, MAP_COMBINE_NAMES, PRECISION_NAMES, RANGES

_NUM = {"type": "number"}
_POS = {"type": "number", "exclusiveMinimum": 0}
_RGB = {"type": "array", "items": _POS, "minItems": 3, "maxItems": 3}
_SIZE = {"type": "integer", "minimum": RANGES["size"][0], "maximum": RANGES["size"][1]}
_FILE_NAME = r"^(?!\.\.?$)[^/\\\x00]+$"  # one name inside the bundle folder: no separators, not . or ..

THRESHOLDS = {"type": "object", "required": ["image", "pixel"],
              "properties": {"image": _POS, "pixel": _POS, "method": {"type": "string"},
                             "good_scores": {"type": "object", "additionalProperties": {"type": "number"}},
                             # the one score scale (contract/scale.py); absent = the old scale (0 = a zero score)
                             "score_scale": {"type": "object", "required": ["kind", "image_zero", "pixel_zero"],
                                             "properties": {"kind": {"enum": ["good"]}, "image_zero": _NUM,
                                                            "pixel_zero": _NUM}}}}

# the head and input settings shared by a checkpoint and the graphs exported from it
_HEAD = {
    "backbone": {"enum": list(BACKBONE_NAMES)},
    "image_size": _SIZE,
    "fit": {"enum": list(FIT_NAMES)},
    "smoothing_sigma": {"type": "number", "minimum": 0, "maximum": RANGES["smoothing"][1]},
    # absent in models before it: no input blur
    "input_blur": {"type": "number", "minimum": 0, "maximum": RANGES["input_blur"][1]},
    "score_top_percent": {"type": "number", "minimum": 0, "maximum": 100},
    "level_weights": {"oneOf": [{"type": "null"}, {"type": "array", "items": _POS, "minItems": 1, "maxItems": 8}]},
    "head": {"enum": list(HEAD_NAMES)},
    "head_weights": {"oneOf": [{"type": "null"}, {"type": "array", "items": _POS, "minItems": 2, "maxItems": 2}]},
    "memory": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["entries", "dims", "bytes"],
                                            "properties": {k: {"type": "integer", "minimum": 1}
                                                           for k in ("entries", "dims", "bytes")}}]},
    "thresholds": THRESHOLDS,
    "tiles": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["rows", "cols", "overlap"],
                                           "properties": {"rows": {"type": "integer", "minimum": 1, "maximum": 8},
                                                          "cols": {"type": "integer", "minimum": 1, "maximum": 8},
                                                          "overlap": {"type": "number", "minimum": 0,
                                                                      "maximum": 0.5}}}]},
    "mean": _RGB,
    "std": _RGB,
}

GRAPH = {
    "type": "object",
    "required": ["format", "backbone", "image_size", "batch", "precision", "thresholds"],
    "properties": _HEAD | {
        "format": {"enum": ["edge-stpm-graph", "edge-stpm-engine", "edge-stpm-triton"]},
        "format_version": {"type": "integer", "minimum": 1},
        "batch": {"type": "integer", "minimum": 1, "maximum": RANGES["batch"][1]},
        "precision": {"enum": list(PRECISION_NAMES)},
        "kind": {"enum": ["model", "frame"]},
        "frame": {"type": "object", "required": ["width", "height"],
                  "properties": {"width": {"type": "integer", "minimum": 16, "maximum": 8192},
                                 "height": {"type": "integer", "minimum": 16, "maximum": 8192}}},
        "input": {"type": "object", "properties": {"shape": {"type": "array", "items": {"type": "integer"}}}},
        "normalisation": {"type": "object", "properties": {"mean": _RGB, "std": _RGB}},
        "map_combine": {"enum": list(MAP_COMBINE_NAMES)},
        "checkpoint_sha256": {"type": "string"},
        "tensorrt_version": {"type": "string"},
        "gpu_name": {"type": "string"},
        "compute_capability": {"type": "string"},
    },
    "if": {"properties": {"kind": {"const": "frame"}}, "required": ["kind"]},
    "then": {"required": ["frame"]},
}

MANIFEST = {
    "type": "object",
    "required": ["format", "files"],
    "properties": {
        "format": {"const": "edge-stpm-bundle"},
        "format_version": {"type": "integer", "minimum": 1},
        "files": {"type": "object",
                  "propertyNames": {"pattern": _FILE_NAME},
                  "additionalProperties": {"type": "object", "required": ["sha256", "bytes"],
                                           "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                                          "bytes": {"type": "integer", "minimum": 0}}}},
    },
}

CHECKPOINT = {
    "type": "object",
    "required": ["format", "format_version", "backbone", "image_size", "thresholds", "teacher", "student"],
    "properties": _HEAD | {
        "format": {"const": "edge-stpm-checkpoint"},
        "format_version": {"type": "integer"},
        "teacher": {"type": "object", "minProperties": 1},
        "student": {"type": "object"},  # empty for a memory-only head (checkpoint.read checks the rest)
        "teacher_source": {"type": "string"},
        "training": {"type": "object"},
    },
}


def _path(err: Any) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "(top level)"


def _short(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def check(doc: Any, schema: dict[str, Any], where: str, fix: str) -> dict[str, Any]:
    """``doc`` if it follows ``schema``; else one UserError: ``WHERE: field F: what is wrong; FIX``."""
    err = best_match(Draft202012Validator(schema).iter_errors(doc))
    if err is None:
        return doc
    if err.validator == "required":
        missing = next((k for k in err.validator_value if k not in err.instance), "?")
        field = ".".join([p for p in (_path(err), missing) if p != "(top level)"])
        raise UserError(f"{where}: field {field} is missing; {fix}")
    shown = _short(repr(err.instance), 40)  # jsonschema quotes the whole instance: keep the message one short line
    what = f"{shown} does not match the pattern of a file name inside the bundle" \
        if err.validator == "pattern" and err.validator_value == _FILE_NAME else \
        _short(err.message.replace(repr(err.instance), shown), 160)
    raise UserError(f"{where}: field {_path(err)}: {what}; {fix}")

SELFTEST = {
    "type": "object",
    "required": ["format", "images", "scores", "tolerance_threshold_units"],
    "properties": {
        "format": {"const": "edge-stpm-selftest"},
        "images": {"type": "array", "minItems": 1, "maxItems": 64, "items": {"type": "string", "pattern": _FILE_NAME}},
        "scores": {"type": "object", "propertyNames": {"enum": list(PRECISION_NAMES)},
                   "additionalProperties": {"type": "array", "items": _NUM, "minItems": 1}},
        "tolerance_threshold_units": {"type": "object", "additionalProperties": _POS},
    },
}
