"""The self-contained checkpoint file ``model.pt``: weights of both trunks plus everything needed to run."""
from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any

import torch
import torchvision

from edge_stpm import __version__
from edge_stpm.common.errors import UserError
from edge_stpm.common.files import atomic_path
from edge_stpm.contract.artifacts import file_sha256  # noqa: F401  (checkpoint.file_sha256 is used by export and bench)
from edge_stpm.contract.schema import CHECKPOINT, check
from edge_stpm.training.backbones import get_spec
from edge_stpm.training.model import STPM, InspectionPipeline

FORMAT = "edge-stpm-checkpoint"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    return {"edge_stpm": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": platform.python_version()}


def save(path: Path, stpm: STPM, *, image_size: int, fit: str, thresholds: dict[str, Any],
         teacher_source: str, training: dict[str, Any], sigma: float, top_percent: float = 0.0,
         level_weights: tuple[float, ...] | None = None, head: str = "stpm", memory: torch.Tensor | None = None,
         head_weights: tuple[float, ...] | None = None, tiles: dict[str, Any] | None = None,
         input_blur: float = 0.0) -> Path:
    """Write the checkpoint atomically (temp file + rename). A memory-only head stores no student weights."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backbone": stpm.backbone,
        "image_size": int(image_size),
        "fit": fit,
        "tiles": tiles,
        "smoothing_sigma": float(sigma),
        "input_blur": float(input_blur),
        "score_top_percent": float(top_percent),
        "level_weights": [float(w) for w in level_weights] if level_weights else None,
        "mean": list(get_spec(stpm.backbone).mean),
        "std": list(get_spec(stpm.backbone).std),
        "input": "uint8 BGR NHWC",
        "teacher_source": teacher_source,
        "teacher": {k: v.detach().cpu().float() for k, v in stpm.teacher.state_dict().items()},
        "student": ({} if head == "memory" else
                    {k: v.detach().cpu().float() for k, v in stpm.student.state_dict().items()}),
        "head": head,
        "memory_bank": memory.detach().cpu().float().contiguous() if memory is not None else None,
        "head_weights": [float(w) for w in head_weights] if head_weights else None,
        "thresholds": thresholds,
        "training": training,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read(path: Path) -> dict[str, Any]:
    """Load and validate a checkpoint dict; one clear UserError for every way it can be wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle/zip/runtime errors for a bad file
        raise UserError(f"cannot read checkpoint {path}: not an edge-stpm checkpoint ({type(exc).__name__})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise UserError(f"{path} is not an edge-stpm checkpoint")
    if ck.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path} has checkpoint format version {ck.get('format_version')}; this edge-stpm reads version "
            f"{FORMAT_VERSION}: retrain or use a matching edge-stpm"
        )
    check(ck, CHECKPOINT, str(path), "retrain it with edge-stpm train")
    for trunk in ("teacher", "student"):
        bad = next((k for k, v in ck[trunk].items() if not isinstance(v, torch.Tensor)), None)
        if bad is not None:
            raise UserError(f"{path}: field {trunk}.{bad} is not a tensor; retrain it with edge-stpm train")
    head = ck.get("head", "stpm")
    bank = ck.get("memory_bank")
    if head != "stpm" and not (isinstance(bank, torch.Tensor) and bank.dim() == 2 and bank.shape[0] > 0):
        raise UserError(f"{path}: field memory_bank: head {head!r} needs a (entries, dims) tensor; "
                        "retrain it with edge-stpm train")
    if head != "memory" and not ck["student"]:
        raise UserError(f"{path}: field student is empty; retrain it with edge-stpm train")
    ck["_path"] = str(path)
    return ck


def build_stpm(ck: dict[str, Any]) -> STPM:
    """Rebuild the STPM modules from a checkpoint dict (no download: teacher weights are inside); weights that do
    not fit the backbone's layers are one UserError."""
    stpm = STPM(ck["backbone"], None)
    for trunk in ("teacher", "student") if ck["student"] else ("teacher",):
        try:
            getattr(stpm, trunk).load_state_dict(ck[trunk])
        except RuntimeError as exc:  # missing / unexpected keys, shape mismatches
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise UserError(f"{ck.get('_path', 'checkpoint')}: field {trunk}: weights do not fit {ck['backbone']} "
                            f"({first[:120]}); retrain it with edge-stpm train") from None
    return stpm.eval()


def load_pipeline(path: Path) -> tuple[InspectionPipeline, dict[str, Any]]:
    """The FP32 inspection pipeline (eval mode, CPU) and the checkpoint dict without its weights."""
    ck = read(path)
    return pipeline(ck), meta(ck)


def pipeline(ck: dict[str, Any], stpm: STPM | None = None) -> InspectionPipeline:
    """The FP32 inspection pipeline of a checkpoint dict with its head settings (smoothing, image score)."""
    return InspectionPipeline(stpm if stpm is not None else build_stpm(ck), ck["image_size"],
                              sigma=ck.get("smoothing_sigma", 0.0), top_percent=ck.get("score_top_percent", 0.0),
                              level_weights=ck.get("level_weights"), head=ck.get("head", "stpm"),
                              memory=ck.get("memory_bank"), head_weights=ck.get("head_weights"),
                              input_blur=ck.get("input_blur", 0.0)).eval()


def meta(ck: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's metadata: everything except the weight tensors."""
    out = {k: v for k, v in ck.items() if k not in ("teacher", "student", "memory_bank", "_path")}
    bank = ck.get("memory_bank")
    if isinstance(bank, torch.Tensor):
        out["memory"] = memory_summary(bank)
    return out


def memory_summary(bank: torch.Tensor) -> dict[str, int]:
    """The bank's size as it travels in graph metadata and the bundle README: entries, dims, float32 bytes."""
    return {"entries": int(bank.shape[0]), "dims": int(bank.shape[1]), "bytes": int(bank.numel() * 4)}

