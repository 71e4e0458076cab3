"""A teacher pack (``edge-stpm teacher`` writes one; ``training/export/teacher_pack.py`` says what is in it), read
and checked before a fit uses it: its ``teacher.json`` against its schema, each graph's sha256, the template's bank
initializers. Torch-free."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_stpm.common.errors import UserError
from edge_stpm.contract.artifacts import file_sha256
from edge_stpm.contract.options import BACKBONE_NAMES, FIT_NAMES
from edge_stpm.contract.schema import check

PACK_FORMAT = "edge-stpm-teacher-pack"
TEACHER_JSON = "teacher.json"
FEATURES = "features_fp32.onnx"
TEMPLATE = "template_fp32.onnx"
TEMPLATE_FP16 = "template_fp16.onnx"  # optional (packs before it have none): fit --precision fp16
BANK_T = "memory.bank_t"    # (D, M): the memory head's MatMul operand
BANK_SQ = "memory.bank_sq"  # (1, 1, M): the entries' squared norms

_NAME = {"type": "string", "pattern": r"^[^/\\]+$"}
SCHEMA = {
    "type": "object",
    "required": ["format", "backbone", "image_size", "fit", "features", "template", "head", "sha256"],
    "properties": {
        "format": {"const": PACK_FORMAT},
        "backbone": {"enum": list(BACKBONE_NAMES)},
        "image_size": {"type": "integer", "minimum": 32, "maximum": 4096},
        "fit": {"enum": list(FIT_NAMES)},
        "features": {"type": "object", "required": ["file", "dims"],
                     "properties": {"file": _NAME, "dims": {"type": "integer", "minimum": 1},
                                    # σ of the input blur inside the feature graph (absent in older packs: none)
                                    "input_blur": {"type": "number", "minimum": 0, "maximum": 4}}},
        "template": {"type": "object", "required": ["file", "bank_t", "bank_sq"],
                     "properties": {"file": _NAME, "bank_t": {"type": "string"}, "bank_sq": {"type": "string"},
                                    "fp16": _NAME}},
        "head": {"type": "object", "required": ["smoothing_sigma", "score_top_percent"],
                 "properties": {"smoothing_sigma": {"type": "number", "minimum": 0},
                                "score_top_percent": {"type": "number", "minimum": 0, "maximum": 10},
                                # the pixel threshold's own method (absent: logsigma with the pixel k)
                                "pixel_method": {"enum": ["p999"]}}},
        "sha256": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
    },
}


@dataclass(frozen=True)
class Pack:
    """A checked teacher pack: its folder and its ``teacher.json``."""

    root: Path
    doc: dict[str, Any]

    @property
    def features(self) -> Path:
        return self.root / self.doc["features"]["file"]

    @property
    def template(self) -> Path:
        return self.root / self.doc["template"]["file"]

    def template_for(self, precision: str) -> Path | None:
        """The template graph for ``precision`` (fp32 always; fp16 in packs that carry one), else None."""
        name = self.doc["template"]["file"] if precision == "fp32" else self.doc["template"].get(precision)
        return self.root / name if name else None

    @property
    def size(self) -> int:
        return int(self.doc["image_size"])

    @property
    def dims(self) -> int:
        return int(self.doc["features"]["dims"])


def read_pack(path: Path) -> Pack:
    """The teacher pack at ``path`` (a pack folder, or a memory bundle that carries one), checked; one UserError
    naming the file and what is wrong otherwise."""
    root = Path(path)
    doc_path = root / TEACHER_JSON
    if not doc_path.is_file():
        raise UserError(f"{root}: not a teacher pack (no {TEACHER_JSON}); make one with edge-stpm teacher "
                        "--backbone mobilenet_v2 --out DIR on a training install, or use a bundle that carries one")
    try:
        doc = json.loads(doc_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{doc_path} is not readable JSON: write the teacher pack again") from None
    check(doc, SCHEMA, str(doc_path), "write the teacher pack again")
    pack = Pack(root, doc)
    half = pack.template_for("fp16")
    for f in [pack.features, pack.template] + ([half] if half is not None else []):
        if not f.is_file():
            raise UserError(f"{doc_path}: {f.name} is missing from the pack")
        want = doc["sha256"].get(f.name)
        if want is None or file_sha256(f) != want:
            raise UserError(f"{f}: its sha256 does not match {TEACHER_JSON} (damaged or replaced): "
                            "write the pack again")
    return pack


def need_template(pack: Pack, precision: str) -> Path:
    """The pack's template for ``precision``, or one UserError when the pack has none (an FP16 template is in packs
    written since they carried one)."""
    template = pack.template_for(precision)
    if template is None:
        raise UserError(f"the teacher pack {pack.root} has no {precision.upper()} template (written before packs "
                        "carried one): write it again with edge-stpm teacher, or fit --precision fp32")
    return template
