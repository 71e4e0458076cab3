"""``edge-stpm demo``: the whole product on an embedded default, in one folder a person can open."""
from __future__ import annotations

import csv
import time
from pathlib import Path

from edge_stpm import bench as bench_mod
from edge_stpm.common.files import ensure_dir, write_text
from edge_stpm.common.progress import console
from edge_stpm.runtime.station import app
from edge_stpm.runtime.station.report import lines as run_lines
from edge_stpm.training.evaluate import evaluate
from edge_stpm.training.export.exporter import export
from edge_stpm.training.synth import SynthConfig, generate
from edge_stpm.training.train import TrainConfig, train


def video_agreement(labels_csv: Path, ng_frames: list[int]) -> dict[str, float]:
    """Precision and recall of NG frames against the synthetic video's labels."""
    with open(labels_csv, newline="") as fh:
        truth = {int(r["frame"]): int(r["label"]) for r in csv.DictReader(fh)}
    ng = set(ng_frames)
    tp = sum(1 for f in ng if truth.get(f))
    pos = sum(truth.values())
    return {"precision": tp / len(ng) if ng else 0.0, "recall": tp / pos if pos else 0.0,
            "ng_frames": len(ng), "defective_frames": pos, "frames": len(truth)}


def _fit_line(s: dict) -> str:
    """What the fit did: the memory bank's size and time, or the student's kept epoch."""
    proxy = s["no_defect_check"]
    check = f" No-defect check (synthetic anomalies of held-out good parts): proxy image AUROC {proxy['mean']:.3f}."
    if s.get("memory") and not s["epochs_run"]:
        m = s["memory"]
        return (f"- Model: memory bank of {m['entries']} patches × {m['dims']} dims ({m['bytes'] / 2**20:.1f} MB) from "
                f"{m['images']} good parts in {m['features_seconds'] + m['coreset_seconds']:.0f} s on {s['device']}, "
                f"nothing trained; checkpoint `run/model.pt`." + check)
    return (f"- Training: kept epoch {s['best_epoch']} of {s['epochs_run']}, {s['train_images_per_s']:.1f} images/s "
            f"on {s['device']}; loss curve `run/loss.png`; checkpoint `run/model.pt`." + check)


def _loop_config(out: Path, data: Path) -> app.RunConfig:
    """Step 5's run (built by ``runtime/station/app.py``, as ``edge-stpm run``'s): the FP32 graph on ONNX Runtime over
    the synthetic video, headless, recorded, NG events and frames saved; no inspection record, no backend line."""
    loop = out / "loop"
    return app.RunConfig(out / "engines" / "model_fp32.onnx", source=[str(data / "video.avi")], backend="onnxruntime",
                         headless=True, record=loop / "overlay.avi", events=loop / "events.jsonl",
                         save_anomalies=loop / "anomalies", no_history=True, quiet=True)


def run_demo(out: Path, epochs: int = 25, teacher_weights: str | None = None) -> dict[str, object]:
    out = ensure_dir(Path(out))
    t0 = time.perf_counter()
    step = lambda n, text: console.print(f"[bold cyan]demo {n}/6[/] {text}")  # noqa: E731
    step(1, "synthetic parts (MVTec layout + labelled video)")
    data = out / "data"
    generate(data, SynthConfig())
    step(2, "fit the model on the good parts (the default head: a memory bank of the mobilenet_v2 teacher's "
            "patches — nothing to train)")
    s = train(TrainConfig(data, out / "run", backbone="mobilenet_v2", epochs=epochs, batch_size=8,
                          teacher_weights=teacher_weights))
    ckpt = out / "run" / "model.pt"
    step(3, "evaluate on the synthetic test split")
    rep = evaluate(ckpt, data, out / "report")
    step(4, "export FP32 / FP16 / INT8 ONNX graphs")
    exp = export(ckpt, ["fp32", "fp16", "int8"], out / "engines", calib_root=out / "calibration")
    step(5, "run the camera loop headless on the synthetic video, recording it")
    summ = app.run(_loop_config(out, data), *run_lines(console, console)).summary
    agree = video_agreement(data / "video_labels.csv", summ.ng_indices)
    step(6, "bench ONNX Runtime and PyTorch on this machine")
    br = bench_mod.bench(ckpt, ["onnxruntime", "pytorch"], ["fp32", "int8"], [1], iters=20, warmup=5,
                         work=out / "bench_work", frame_sizes=((640, 480),))
    bench_mod.save(br, out / "bench")
    o = rep["overall"]
    lines = [
        "# edge-stpm demo", "",
        "Synthetic parts (procedural; not evidence of accuracy on real parts), mobilenet_v2 teacher.", "",
        _fit_line(s),
        f"- Test split: image AUROC {o['image_auroc']:.3f}, pixel AUROC {o['pixel_auroc']:.3f}, AUPRO@0.3 "
        f"{o['aupro']:.3f}: `report/report.md`, `report/examples.png`, `report/roc_image.png`.",
        "- Graphs: " + ", ".join(f"{p} map error {g['parity_vs_pytorch']['map_rel_l2']:.1e}" for p, g in exp["graphs"].items())
        + " (relative L2 vs PyTorch): `engines/`.",
        f"- Loop on `data/video.avi`: {summ.frames} frames at {summ.fps:.1f} FPS end-to-end, {summ.ng_frames} NG; "
        f"against the labels precision {agree['precision']:.2f}, recall {agree['recall']:.2f}. "
        "Recording `loop/overlay.avi`, events `loop/events.jsonl`, saved NG frames `loop/anomalies/`.",
        "- Speed on this machine: `bench/bench.md`, `bench/bench.png`.", "",
        f"Total demo time {time.perf_counter() - t0:.0f} s.", "",
    ]
    write_text(out / "README.md", "\n".join(lines))
    console.print("\n".join(lines[4:10]), highlight=False)
    console.print(f"[bold green]demo done[/] — open {out}/README.md")
    return {"train": s, "report": rep, "export": exp, "loop": summ, "video": agree, "bench": br}
