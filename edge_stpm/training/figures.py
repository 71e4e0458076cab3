"""PNG figures: loss curves, ROC curves, heatmap grids. Matplotlib with the Agg backend, written atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from edge_stpm.common.files import atomic_path  # noqa: E402


def _save(fig: "plt.Figure", path: Path) -> Path:
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def loss_curve(history: Sequence[dict[str, float]], best_epoch: int, path: Path) -> Path:
    """Training and validation loss per epoch, the kept epoch marked."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], label="train")
    ax.plot(ep, [h["val_loss"] for h in history], label="validation (held-out good)")
    if best_epoch > 0:
        ax.axvline(best_epoch, color="k", ls=":", label=f"kept: epoch {best_epoch}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("STPM loss")
    ax.legend()
    return _save(fig, path)


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float | None]], title: str, path: Path,
               marks: dict[str, tuple[float, float]] | None = None) -> Path:
    """ROC curves: name → (fpr, tpr, auroc); ``marks`` name → (fpr, tpr) of the stored threshold (1.0), drawn as a
    dot on each curve."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, (fpr, tpr, auc) in curves.items():
        line, = ax.plot(fpr, tpr, label=f"{name} ({auc:.3f})" if auc is not None else name)
        if marks and name in marks:
            ax.plot(*marks[name], "o", color=line.get_color(), ms=5)
    if marks:
        ax.plot([], [], "o", color="0.3", ms=5, label="threshold 1.0 (stored)")
    ax.plot([0, 1], [0, 1], color="0.7", ls="--")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def bar_chart(labels: Sequence[str], values: Sequence[float], xlabel: str, title: str, path: Path) -> Path:
    """Horizontal bars, one per label."""
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    ax.barh(range(len(labels)), values, color="tab:blue")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=7)
    return _save(fig, path)


def image_grid(tiles: Sequence[np.ndarray], captions: Sequence[str], path: Path, cols: int = 6) -> Path:
    """A grid of BGR uint8 tiles ``(H, W, 3)`` with captions."""
    rows = max(1, -(-len(tiles) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, tile, cap in zip(axes.ravel(), tiles, captions):
        ax.imshow(tile[..., ::-1])
        ax.set_title(cap, fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
