"""Learning on the box, measured on magnetic tile (benchmarks/results/learn/RULE.md): a teacher pack, then
``edge-stpm fit`` on the runtime install (the .venv-runtime made by .ci/run: no torch) with the exact coreset (E),
the chunked one (C), the two-stage one (T) and a 2×2 tiled fit with the default coreset (T22), each timed and
evaluated on the whole test split (image AUROC, SegF1 at the stored thresholds, where the defect is); optionally
beside a ``train --head memory`` checkpoint of the same seed (parity: thresholds and AUROC).

    nice -n 19 python3 benchmarks/learn/fit_magnetic_tile.py --seed 0 [--only E,T] [--name fit_T] [--train-checkpoint RUN/model.pt]
    (EDGE_STPM_RUNTIME_PYTHON or --runtime-python: the runtime venv's python; default .venv-runtime/bin/python)

Writes benchmarks/results/learn/NAME_seedSEED.json and .md (NAME: --name, default fit).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = {"E": ["--coreset-exact-max", "1000000000"], "C": ["--coreset-chunk", "32768"],
              "T": ["--coreset-exact-max", "0"], "T22": ["--tiles", "2x2"]}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    p.add_argument("--work", type=Path, default=Path("/tmp/learn"))
    p.add_argument("--keep", type=Path, default=ROOT / "benchmarks" / "results" / "learn")
    p.add_argument("--train-checkpoint", type=Path, default=None)
    p.add_argument("--runtime-python", type=Path,
                   default=Path(os.environ.get("EDGE_STPM_RUNTIME_PYTHON", ROOT / ".venv-runtime" / "bin" / "python")))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="E,C", help="candidates to run")
    p.add_argument("--name", default="fit", help="result files NAME_seedSEED.json / .md")
    return p.parse_args(argv)


def evaluate_bundle(bundle: Path, data: Path, threads: int) -> dict[str, Any]:
    """``evaluate``'s figures for a bundle (ONNX Runtime FP32) on the labelled test split."""
    from edge_stpm.common.images import labelled_test_images
    from edge_stpm.contract.scale import ScoreScale
    from edge_stpm.runtime.backends.onnxruntime_backend import OnnxBackend
    from edge_stpm.training.evaluate import compute_metrics, frame_results, score_set, test_inputs, where_metrics

    b = OnnxBackend(bundle / "model_fp32.onnx", threads)
    meta = b.metadata
    items = labelled_test_images(data)
    test = test_inputs(items, meta, True)

    def infer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, s = b.infer_any(x)
        return np.asarray(m, np.float32).reshape(len(x), *x.shape[1:3]), np.asarray(s)

    maps, scores = frame_results(test, meta, *score_set(infer, test["inputs"], 8, True))
    labels = np.array([i.label for i in items])
    defects = np.array([i.defect for i in items])
    thr = meta["thresholds"]
    res = compute_metrics(maps, scores, labels, test["masks"], defects, thr["pixel"])
    res["segmentation"] = where_metrics(maps, test["masks"], defects, thr["pixel"], ScoreScale.of(thr))
    good = scores[labels == 0]
    res["false_calls"] = float(np.mean(good >= thr["image"]))
    res["recall"] = float(np.mean(scores[labels == 1] >= thr["image"]))
    b.close()
    return res


def run_fit(a: argparse.Namespace, pack: Path, name: str, args: list[str]) -> dict[str, Any]:
    out = a.work / f"seed{a.seed}" / name
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run([str(a.runtime_python), "-m", "edge_stpm.cli", "fit", "--teacher", str(pack), "--data",
                        str(a.data), "--out", str(out), "--seed", str(a.seed), *args,
                        "--threads", str(a.threads), "--quiet"], capture_output=True, text=True, cwd="/")
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"fit {name} failed: {r.stderr[-2000:]}")
    rep = json.loads((out / "fit.json").read_text())
    return {"args": args, "wall_s": wall, "stdout": r.stdout.strip(), "fit": {k: rep.get(k) for k in (
        "images", "held_out", "train_images", "memory", "thresholds", "no_defect_check", "seconds", "coreset_method",
        "patches", "tiles")},
        "test": evaluate_bundle(out, a.data, a.threads)}


def main(argv: list[str]) -> int:
    a = parse(argv)
    from edge_stpm.common.files import ensure_dir, write_json, write_text
    from edge_stpm.training.export.teacher_pack import write_teacher_pack

    keep = ensure_dir(a.keep)
    pack = a.work / "pack"
    t0 = time.perf_counter()
    if not (pack / "teacher.json").is_file():
        write_teacher_pack(pack, "mobilenet_v2", 256)
    rec: dict[str, Any] = {"seed": a.seed, "data": str(a.data), "pack_s": time.perf_counter() - t0,
                           "pack_mb": sum(p.stat().st_size for p in pack.iterdir()) / 2**20,
                           "loadavg_start": list(os.getloadavg()), "runtime_python": str(a.runtime_python),
                           "candidates": {}}
    for name in a.only.split(","):
        rec["candidates"][name] = run_fit(a, pack, name, CANDIDATES[name])
        c = rec["candidates"][name]
        print(f"{name}: {c['wall_s']:.0f} s wall, image AUROC {c['test']['overall']['image_auroc']:.4f}, SegF1 "
              f"{c['test']['overall']['segf1']['f1']:.3f}", flush=True)
    if a.train_checkpoint:
        import torch

        ck = torch.load(a.train_checkpoint, weights_only=False)
        rec["train"] = {"checkpoint": str(a.train_checkpoint), "thresholds": {k: ck["thresholds"][k] for k in (
            "image", "pixel")}, "entries": int(ck["memory_bank"].shape[0]),
            "val_images": ck["training"]["val_images"][:5]}
    rec["loadavg_end"] = list(os.getloadavg())
    write_json(keep / f"{a.name}_seed{a.seed}.json", rec)
    write_text(keep / f"{a.name}_seed{a.seed}.md", table(rec))
    print(table(rec))
    return 0


def table(rec: dict[str, Any]) -> str:
    rows = ["| candidate | wall s | features s | coreset s | entries | image thr | pixel thr | image AUROC | pixel AUROC "
            "| SegF1 | false calls | recall | no-defect check |", "|" + "---|" * 13]
    for n, c in rec["candidates"].items():
        f, t = c["fit"], c["test"]
        how = " ".join(c["args"]) if "args" in c else f"--coreset-chunk {c['chunk']}"
        rows.append(f"| {n} ({how}; {f.get('coreset_method') or ''}) | {c['wall_s']:.0f} | {f['seconds']['features']:.0f} | "
                    f"{f['seconds']['coreset']:.0f} | {f['memory']['entries']} | {f['thresholds']['image']:.4g} | "
                    f"{f['thresholds']['pixel']:.4g} | {t['overall']['image_auroc']:.4f} | "
                    f"{t['overall']['pixel_auroc']:.4f} | {t['overall']['segf1']['f1']:.3f} | "
                    f"{100 * t['false_calls']:.1f} % | {t['recall']:.3f} | {f['no_defect_check']['mean']:.3f} |")
    head = [f"# Fit on the box, magnetic tile, seed {rec['seed']}", "",
            f"Teacher pack {rec['pack_mb']:.1f} MB; runtime install {rec['runtime_python']}; load average at start "
            f"{rec['loadavg_start'][0]:.1f}, at end {rec['loadavg_end'][0]:.1f}.", ""]
    if "train" in rec:
        head += [f"train --head memory, same seed: image threshold {rec['train']['thresholds']['image']:.4g}, pixel "
                 f"{rec['train']['thresholds']['pixel']:.4g}, {rec['train']['entries']} entries.", ""]
    return "\n".join(head + rows) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
