"""Round 4 (benchmarks/results/accuracy/RULE_R4.md): one candidate and seed on magnetic tile — train (or reuse a
checkpoint) → optional recalibration → evaluate → the where-the-defect-is table; keeps
benchmarks/results/r4/NAME_seedSEED.json (the whole report, options, fit time, machine load) and .md (the report).

    nice -n 19 python3 benchmarks/r4/where_metrics.py --name baseline --seed 0 [-- TRAIN OPTIONS...]
    python3 benchmarks/r4/where_metrics.py --name P2 --seed 0 --checkpoint /tmp/r4/baseline_seed0/run/model.pt \\
        --calibrate "--threshold-method percentile"
    python3 benchmarks/r4/where_metrics.py --table benchmarks/results/r4/*.json      (the table of saved runs)

Train options go after ``--`` (the default: mobilenet_v2, the memory head, everything else as ``edge-stpm train``);
a ``--checkpoint`` is copied into the work folder before ``--calibrate`` changes it, never changed in place;
``--reuse`` keeps a run folder already trained there (its training.json's fit time is reported).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="baseline", help="candidate name (file stem with the seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic_tile")
    p.add_argument("--work", type=Path, default=Path("/tmp/r4"), help="run folders (checkpoints, reports)")
    p.add_argument("--keep", type=Path, default=ROOT / "benchmarks" / "results" / "r4", help="where results go")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for train and evaluate (default: all)")
    p.add_argument("--checkpoint", type=Path, default=None, help="reuse this model.pt instead of training")
    p.add_argument("--reuse", action="store_true", help="keep WORK/NAME_seedSEED/run if it holds a trained model")
    p.add_argument("--calibrate", default="", help="edge-stpm calibrate options applied before evaluating")
    p.add_argument("--table", nargs="+", type=Path, default=None, help="only print the table of these JSONs")
    p.add_argument("train_options", nargs=argparse.REMAINDER, help="-- then edge-stpm train options")
    a = p.parse_args(argv)
    a.train_options = [o for o in a.train_options if o != "--"]
    return a


def machine() -> dict[str, Any]:
    """The load this run shared the CPU with: 1/5/15-minute load averages and the core count."""
    return {"loadavg": list(os.getloadavg()), "cores": os.cpu_count(), "host": platform.node(),
            "nice": os.nice(0)}


def commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def run(cmd: list[str]) -> tuple[float, str]:
    """Run an edge-stpm command; (wall seconds, its output); a failure ends the script with that output."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{shlex.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - t0, done.stdout + done.stderr


def threads(a: argparse.Namespace) -> list[str]:
    return ["--threads", str(a.threads)] if a.threads else []


def model(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train into ``work/run`` (or copy ``--checkpoint`` there); then ``--calibrate``. Returns what was done."""
    run_dir = work / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"train_options": a.train_options, "calibrate_options": a.calibrate}
    if a.checkpoint:
        shutil.copy2(a.checkpoint, run_dir / "model.pt")
        info["from_checkpoint"] = str(a.checkpoint)
    elif a.reuse and (run_dir / "model.pt").is_file() and (run_dir / "training.json").is_file():
        info["reused_run"] = str(run_dir)
        info["training_json_wall_s"] = json.loads((run_dir / "training.json").read_text()).get("wall_seconds")
    else:
        cmd = ["edge-stpm", "train", "--data", str(a.data), "--backbone", "mobilenet_v2", "--seed", str(a.seed),
               "--out", str(run_dir), "--quiet", *threads(a), *a.train_options]
        info["machine_before_train"] = machine()
        info["train_wall_s"], info["train_output"] = run(cmd)
        info["machine_after_train"] = machine()
        info["training_json_wall_s"] = json.loads((run_dir / "training.json").read_text()).get("wall_seconds")
    if a.calibrate:
        _, info["calibrate_output"] = run(["edge-stpm", "calibrate", "--checkpoint", str(run_dir / "model.pt"),
                                           *shlex.split(a.calibrate)])
    return info


def evaluate(a: argparse.Namespace, work: Path) -> tuple[dict[str, Any], float]:
    from edge_stpm.training.evaluate import evaluate as run_eval

    t0 = time.perf_counter()
    rep = run_eval(work / "run" / "model.pt", a.data, work / "report", quiet=True, threads=a.threads)
    return rep, time.perf_counter() - t0


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def row(rec: dict[str, Any], defects: list[str]) -> str:
    """One markdown row: AUROCs, AU-PROs, SegF1 (P / R), per defect region / true area and IoU (medians), the good
    images' coloured share at 0.5× and 0.8× the pixel threshold (median / p90), fit seconds."""
    r = rec["report"]
    o, seg = r["overall"], r["segmentation"]
    g, reg = seg["good_coloured"], seg["regions"]["touching"]
    s = o["segf1"]
    cells = [rec["name"], str(rec["seed"]), _f(o["image_auroc"]), _f(o["pixel_auroc"]), _f(o["aupro"]),
             _f(o["aupro_005"]), f"{_f(s['f1'])} ({_f(s['precision'])} / {_f(s['recall'])})"]
    cells += [f"{_f(reg[d]['area_ratio_median'], '.2f')}× / {_f(reg[d]['iou_median'], '.2f')}" if d in reg else "–"
              for d in defects]
    cells += [f"{100 * g[k]['median']:.1f} / {100 * g[k]['p90']:.1f} %" for k in ("0.5", "0.8")]
    cells.append(_f(rec.get("train_wall_s", rec.get("training_json_wall_s")), ".0f"))
    return "| " + " | ".join(cells) + " |"


def table(records: list[dict[str, Any]]) -> str:
    """The markdown table of runs (``row``), one column per defect type any of them has."""
    defects = sorted({d for r in records for d in r["report"]["segmentation"]["regions"]["touching"]})
    head = (["candidate", "seed", "image AUROC", "pixel AUROC", "AUPRO@0.3", "AU-PRO@0.05", "SegF1 (P / R)"]
            + [f"{d} area / IoU" for d in defects] + ["good coloured ≥0.5× med / p90", "≥0.8× med / p90", "fit s"])
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *(row(r, defects) for r in records)])


def main(argv: list[str]) -> int:
    a = parse(argv)
    if a.table:
        print(table([json.loads(p.read_text()) for p in a.table]))
        return 0
    from edge_stpm.common.files import ensure_dir, write_json, write_text
    from edge_stpm.training.evaluate import markdown, summary_lines

    work = a.work / f"{a.name}_seed{a.seed}"
    rec: dict[str, Any] = {"name": a.name, "seed": a.seed, "data": str(a.data), "commit": commit(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **model(a, work)}
    rep, rec["evaluate_wall_s"] = evaluate(a, work)
    rec["machine_after_evaluate"] = machine()
    rec["report"] = rep
    keep = ensure_dir(a.keep)
    write_json(keep / f"{a.name}_seed{a.seed}.json", rec)
    write_text(keep / f"{a.name}_seed{a.seed}.md", markdown(rep))
    print("\n".join(summary_lines(rep)))
    print(table([rec]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
