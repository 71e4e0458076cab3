"""What ``edge-stpm export`` shows: its options parsed, the export run, then one table row per graph (size, parity
with PyTorch, accuracy on --data) and a line per frame-path graph (the command line only declares the options)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.table import Table

from edge_stpm.common.errors import UserError
from edge_stpm.contract.artifacts import parse_frame_size, parse_precisions
from edge_stpm.contract.options import parse_ints
from edge_stpm.training.devices import set_threads
from edge_stpm.training.export.exporter import export


def print_export(out: Console, checkpoint: Path, precision: str, batch: int, out_dir: Optional[Path],
                 calib: Optional[Path], calib_count: int, calib_method: str, calib_root: Path, data: Optional[Path],
                 int8_float_stages: str, force: bool, frame_size: Optional[str], threads: Optional[int],
                 quiet: bool) -> None:
    """Export ``checkpoint`` into a bundle (default engines/<run name>/) with ``export``'s options as typed."""
    set_threads(threads)
    precs = parse_precisions(precision)
    folder = out_dir or Path("engines") / (checkpoint.parent.name or "model")
    stages = _float_stages(int8_float_stages)
    sizes = [parse_frame_size(x) for x in frame_size.split(",") if x.strip()] if frame_size else []
    r = export(checkpoint, precs, folder, batch, calib, calib_count, calib_method, calib_root, data, quiet=quiet,
               float_stages=stages, force=force, frame_sizes=sizes)
    out.print(_graph_table(r, folder))
    for name, g in r.get("frame_graphs", {}).items():
        pv = g["parity_vs_host_path"]
        out.print(f"{name}: map rel. L2 vs host path {pv['map_rel_l2']:.2e}, score error {pv['score_err_max']:.2e} "
                  "of the threshold")
    out.print(f"graphs and metadata in {folder}/ (export.json)")


def _float_stages(text: str) -> tuple[int, ...]:
    """--int8-float-stages: stage numbers 0, 1, 2 (comma list; '' quantizes all)."""
    stages = tuple(parse_ints(text, "--int8-float-stages", minimum=0)) if text.strip() else ()
    if any(s > 2 for s in stages):
        raise UserError("--int8-float-stages takes stage numbers 0, 1 and 2")
    return stages


def _graph_table(r: dict[str, Any], folder: Path) -> Table:
    t = Table(title=f"export: {folder}")
    for c in ("graph", "MB", "map rel. L2 vs PyTorch", "score max rel. err", "image AUROC", "pixel AUROC", "AUPRO"):
        t.add_column(c)
    f = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    for p, g in r["graphs"].items():
        te = g.get("test", {})
        t.add_row(p, f"{g['bytes'] / 1e6:.1f}", f"{g['parity_vs_pytorch']['map_rel_l2']:.2e}",
                  f"{g['parity_vs_pytorch']['score_max_rel_err']:.2e}", f(te.get("image_auroc")),
                  f(te.get("pixel_auroc")), f(te.get("aupro")))
    return t
