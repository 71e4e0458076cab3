"""The ``edge-stpm`` command line: thin wrappers that parse, call one function and print."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Real-time visual inspection with Student-Teacher Feature Pyramid Matching (STPM).")
out = Console()
err = Console(stderr=True)


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into one red line on stderr and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
    return wrapper


@app.command()
@one_line_errors
def synth(out_dir: Path = typer.Option(..., "--out", help="Folder to write (MVTec layout + video.avi)."),
          n_train: int = typer.Option(80, help="Good training images."),
          n_test_good: int = typer.Option(16, help="Good test images."),
          n_test_defect: int = typer.Option(8, help="Test images per defect type."),
          video_frames: int = typer.Option(120, help="Frames in the labelled video."),
          size: int = typer.Option(256, help="Image side in pixels."),
          seed: int = typer.Option(0)) -> None:
    """Generate a seeded synthetic inspection set (for demos and tests; not evidence of accuracy)."""
    from .synth import SynthConfig, generate

    counts = generate(out_dir, SynthConfig(size, n_train, n_test_good, n_test_defect, video_frames, seed=seed))
    out.print(f"wrote {out_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@app.command()
@one_line_errors
def train(data: Path = typer.Option(..., help="MVTec-layout folder (uses train/good) or a folder of good images."),
          out_dir: Path = typer.Option(Path("runs/latest"), "--out", help="Run folder; the checkpoint is OUT/model.pt."),
          backbone: str = typer.Option("resnet18", help="resnet18 | mobilenet_v2 | wide_resnet50_2"),
          epochs: int = typer.Option(30),
          lr: float = typer.Option(0.4, help="SGD learning rate."),
          momentum: float = typer.Option(0.9),
          weight_decay: float = typer.Option(1e-4),
          batch_size: int = typer.Option(32),
          val_fraction: float = typer.Option(0.2, help="Share of good images held out for model selection and thresholds."),
          size: int = typer.Option(256, help="Model input side (pixels)."),
          fit: str = typer.Option("stretch", help="How images meet the square input: stretch | pad | crop."),
          threshold: str = typer.Option("percentile", help="Threshold from held-out good images: percentile | sigma."),
          seed: int = typer.Option(0),
          device: str = typer.Option("auto", help="auto | cpu | cuda"),
          teacher_weights: Optional[str] = typer.Option(None, help="Teacher state-dict file (default: torchvision cache / download); 'random' for tests only."),
          quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Train an STPM student on good images; keep the epoch with the lowest held-out loss; set thresholds."""
    from .train import TrainConfig, train as run_train

    s = run_train(TrainConfig(data, out_dir, backbone, epochs, lr, momentum, weight_decay, batch_size, val_fraction,
                              size, fit, seed, device, teacher_weights, threshold, quiet=quiet))
    out.print(f"kept epoch {s['best_epoch']}/{s['epochs_run']} (validation loss {s['best_val_loss']:.4f}); "
              f"{s['train_images_per_s']:.1f} training images/s on {s['device']}; wall {s['wall_seconds']:.0f} s")
    out.print(f"checkpoint: {Path(out_dir) / 'model.pt'}")


@app.command()
@one_line_errors
def evaluate(checkpoint: Path = typer.Option(..., help="model.pt from train."),
             data: Path = typer.Option(..., help="MVTec-layout folder with test/ and ground_truth/."),
             out_dir: Path = typer.Option(Path("reports/latest"), "--out", help="Report folder."),
             device: str = typer.Option("cpu", help="auto | cpu | cuda"),
             batch_size: int = typer.Option(16),
             quiet: bool = typer.Option(False)) -> None:
    """Image AUROC, pixel AUROC, AUPRO@0.3 (overall and per defect), F1 at the stored threshold, figures."""
    from .evaluate import evaluate as run_eval

    r = run_eval(checkpoint, data, out_dir, device, batch_size, quiet)
    t = Table(title=f"evaluation: {data}")
    for c in ("subset", "n", "image AUROC", "pixel AUROC", "AUPRO@0.3"):
        t.add_column(c)
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    o = r["overall"]
    t.add_row("all", str(o["n"]), f(o["image_auroc"]), f(o["pixel_auroc"]), f(o["aupro"]))
    for d, b in r["per_defect"].items():
        t.add_row(f"good+{d}", str(b["n"]), f(b["image_auroc"]), f(b["pixel_auroc"]), f(b["aupro"]))
    out.print(t)
    a = r["at_stored_threshold"]
    out.print(f"at stored threshold: precision {a['precision']:.3f} recall {a['recall']:.3f} F1 {a['f1']:.3f}")
    out.print(f"report: {Path(out_dir) / 'report.md'}")


def main() -> None:
    app(prog_name="edge-stpm")


if __name__ == "__main__":
    sys.exit(main())
