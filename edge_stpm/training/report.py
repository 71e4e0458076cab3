"""What ``edge-stpm train``, ``evaluate`` (and ``evaluate --compare``) and ``update-memory --checkpoint`` show: each
function runs the command's one call and prints its lines (the command line only parses)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.table import Table

from edge_stpm.training.evaluate import evaluate, summary_lines
from edge_stpm.training.train import TrainConfig, train
from edge_stpm.training.update.compare import compare
from edge_stpm.training.update.memory import update_memory


def proxy_line(p: dict[str, Any]) -> str:
    """The no-defect check in one line: proxy image AUROC on synthetic anomalies of the held-out good images."""
    kinds = ", ".join(f"{k} {v['image_auroc']:.3f}" for k, v in p["kinds"].items())
    choice = p.get("choice")
    chosen = (f"; --head auto chose {choice['chosen']} ("
              + ", ".join(f"{h} {m:.3f}" for h, m in choice["mean"].items()) + ")") if choice else ""
    what = "tiles of held-out good images" if p.get("tiles") else "held-out good images"
    return (f"no-defect check (synthetic anomalies on {p['images']} {what}, no labels): proxy image AUROC "
            f"{p['mean']:.3f} ({kinds}){chosen}")


def print_train(out: Console, /, loss: Optional[str] = None, **fields: Any) -> None:
    """Train (``fields``: TrainConfig's, its ``out`` among them — hence ``out``, the console, positional only;
    ``loss`` None: its default), then print the kept epoch (stpm), the memory bank (memory), the no-defect check and
    the checkpoint."""
    cfg = TrainConfig(**fields, **({"loss": loss} if loss else {}))
    s = train(cfg)
    if s["epochs_run"]:
        out.print(f"kept epoch {s['best_epoch']}/{s['epochs_run']} (validation loss {s['best_val_loss']:.4f}); "
                  f"{s['train_images_per_s']:.1f} training images/s on {s['device']}; wall {s['wall_seconds']:.0f} s")
    if s["memory"]:
        m = s["memory"]
        out.print(f"memory bank: {m['entries']} of {m['patches']} patches × {m['dims']} dims "
                  f"({m['bytes'] / 2**20:.1f} MB); features {m['features_seconds']:.0f} s, coreset "
                  f"{m['coreset_seconds']:.0f} s; wall {s['wall_seconds']:.0f} s")
    out.print(proxy_line(s["no_defect_check"]), highlight=False)
    out.print(f"checkpoint: {Path(cfg.out) / 'model.pt'}")


def print_evaluate(out: Console, checkpoint: Path, data: Path, out_dir: Path, device: str, batch_size: int,
                   quiet: bool, threads: Optional[int]) -> None:
    """Evaluate, then: the AUROC / AUPRO table, the stored threshold's precision and recall, where the defect is,
    the no-defect check, the report."""
    r = evaluate(checkpoint, data, out_dir, device, batch_size, quiet, threads=threads)
    out.print(_evaluation_table(r, data))
    a = r["at_stored_threshold"]
    out.print(f"at stored threshold: precision {a['precision']:.3f} recall {a['recall']:.3f} F1 {a['f1']:.3f}")
    for line in summary_lines(r):  # where the defect is: SegF1, AU-PRO@0.05, region / true area, IoU, coloured share
        out.print(line, highlight=False)
    if r.get("no_defect_check"):
        out.print(proxy_line(r["no_defect_check"]), highlight=False)
    out.print(f"report: {Path(out_dir) / 'report.md'}")


def _evaluation_table(r: dict[str, Any], data: Path) -> Table:
    t = Table(title=f"evaluation: {data}")
    for c in ("subset", "n", "image AUROC", "pixel AUROC", "AUPRO@0.3"):
        t.add_column(c)
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    o = r["overall"]
    t.add_row("all", str(o["n"]), f(o["image_auroc"]), f(o["pixel_auroc"]), f(o["aupro"]))
    for d, b in r["per_defect"].items():
        t.add_row(f"good+{d}", str(b["n"]), f(b["image_auroc"]), f(b["pixel_auroc"]), f(b["aupro"]))
    return t


def print_compare(out: Console, models: tuple[Path, Path], data: Path, out_dir: Path) -> None:
    """``evaluate --compare OLD NEW``: false calls, recall and image AUROC of each model, the figure."""
    r = compare(models[0], models[1], data, out_dir)
    t = Table(title=f"old vs new on {data}/test")
    for c in ("model", "false calls", "recall", "image AUROC"):
        t.add_column(c)
    pct = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
    for name in ("old", "new"):
        m = r[name]
        t.add_row(f"{name}: {m['model']}", f"{m['false_calls']}/{m['good']} ({pct(m['false_call_rate'])})",
                  f"{m['defects'] - m['missed']}/{m['defects']} ({pct(m['recall'])})",
                  "n/a" if m["image_auroc"] is None else f"{m['image_auroc']:.3f}")
    out.print(t)
    out.print(f"figure: {r['figure']}; figures per image: {Path(out_dir) / 'compare.json'}")


def print_memory_update(out: Console, checkpoint: Path, data: Path, out_path: Path, quiet: bool,
                        method: str = "auto") -> None:
    """``update-memory --checkpoint``: the method, the good images added, the bank and threshold before → after, the
    times."""
    s = update_memory(checkpoint, data, out_path, quiet, method)
    look = s.get("look")
    shown = f"; the look: defocus {look['sigma_px']} px, mid-grey 128 → {look['mid_grey_to']}" if look else ""
    out.print(f"method {s['mode']} ({s['why']}){shown}", highlight=False, soft_wrap=True)
    out.print(f"{s['added_images']} good images added ({s['patches_added']} patches): bank {s['entries_before']} → "
              f"{s['entries_after']} entries; image threshold {s['image_threshold_before']:.4g} → "
              f"{s['image_threshold_after']:.4g}; features {s['features_seconds']:.1f} s, coreset "
              f"{s['coreset_seconds']:.1f} s, calibration {s['calibrate_seconds']:.1f} s; checkpoint: {out_path}",
              highlight=False, soft_wrap=True)
