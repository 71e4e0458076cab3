"""What ``edge-stpm fit`` and ``update-memory --bundle`` show: progress bars per stage, then one line."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from edge_stpm.common.progress import bar
from edge_stpm.runtime.learn.fit import FitConfig, Progress, fit
from edge_stpm.runtime.learn.update import UpdateConfig, update


@contextmanager
def stage_bars(quiet: bool) -> Iterator[Progress]:
    """A progress callback ``(stage, done, total)`` drawing one bar per stage."""
    with bar(quiet) as progress:
        tasks: dict[str, list[Any]] = {}  # stage → [task id, done so far]

        def tell(stage: str, done: int, total: int) -> None:
            t = tasks.setdefault(stage, [progress.add_task(stage, total=total, info=""), 0])
            progress.advance(t[0], done - t[1])
            t[1] = done

        yield tell


def print_fit(out: Console, cfg: FitConfig, quiet: bool) -> None:
    with stage_bars(quiet) as tell:
        r = fit(cfg, tell)
    t, sec = r["thresholds"], r["seconds"]
    out.print(f"bundle {cfg.out}: {r['memory']['entries']} memory entries from {r['train_images']} images "
              f"({r['held_out']} held out); image threshold {t['image']:.4g}, pixel {t['pixel']:.4g}; no-defect "
              f"check {r['no_defect_check']['mean']:.3f}; {sec['total']:.1f} s (features {sec['features']:.1f} s, "
              f"coreset {sec['coreset']:.1f} s)", highlight=False, soft_wrap=True)
    for w in r.get("warnings", []):
        out.print(f"warning: {w}", style="yellow", highlight=False, soft_wrap=True)
    print_graphs(out, r)


def print_graphs(out: Console, r: dict[str, Any]) -> None:
    """One line per graph beyond FP32: its parity with the FP32 graph, and whether it passed its gate."""
    for prec, g in r.get("graphs", {}).items():
        if prec == "fp32":
            continue
        pv = g["parity_vs_fp32"]
        what = (f"{g['file']}" if g.get("file") else
                f"not written (misses {prec.upper()}'s gate: {'; '.join(g['gate']['failures'])})")
        out.print(f"{prec.upper()}: {what}; vs the FP32 graph on {pv['images']} held-out images: map rel. L2 "
                  f"{pv['map_rel_l2']:.2e}, score error median / max {pv['score_err_median']:.2e} / "
                  f"{pv['score_err_max']:.2e} of the threshold", highlight=False, soft_wrap=True)


def print_update(out: Console, bundle: Path, data: Path, dest: Path, method: str, quiet: bool) -> None:
    with stage_bars(quiet) as tell:
        r = update(UpdateConfig(bundle, data, dest, mode=method), tell)
    s, sec = r["memory_updates"][-1], r["seconds"]
    look = s.get("look")
    shown = f"; the look: defocus {look['sigma_px']} px, mid-grey 128 → {look['mid_grey_to']}" if look else ""
    out.print(f"method {s['mode']} ({s.get('why', '')}){shown}", highlight=False, soft_wrap=True)
    out.print(f"{s['added_images']} good images added ({s['patches_added']} patches, {s['held_out_added']} more held "
              f"out): bank {s['entries_before']} → {s['entries_after']} entries; image threshold "
              f"{s['image_threshold_before']:.4g} → {r['thresholds']['image']:.4g}; no-defect check "
              f"{r['no_defect_check']['mean']:.3f}; {sec['total']:.1f} s; bundle: {dest} (deploy it)",
              highlight=False, soft_wrap=True)
