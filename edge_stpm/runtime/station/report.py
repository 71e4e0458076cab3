"""What ``edge-stpm run`` shows: the run's lines as they come (say, warning, error), its summary at the end, and with
``--safe-mode`` a station file that does not start: its errors, then safe mode (safemode.py); what ``edge-stpm
collect`` shows: a progress bar, then what was kept."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

from rich.console import Console
from rich.markup import escape

from edge_stpm.common.errors import UserError
from edge_stpm.common.files import write_json
from edge_stpm.common.progress import bar
from edge_stpm.common.redact import redact
from edge_stpm.runtime.learn.collect import CollectSettings
from edge_stpm.runtime.station import app
from edge_stpm.runtime.station.config import collect_values, load
from edge_stpm.runtime.station.safemode import run as safe


def print_run(out: Console, err: Console, given: dict[str, Any], config: Optional[Path],
              on_command_line: Callable[[str], bool], safe_mode: bool) -> Optional[int]:
    """``edge-stpm run``: settle its configuration (``app.settle``), run, print the summary. None when the run ended;
    with ``safe_mode`` and a station file, a UserError is printed and served (safe mode's exit code returned)."""
    say, warn, error = lines(out, err)
    try:
        cfg = app.settle(given, config, on_command_line)
        r = app.run(cfg, say, warn, error)
        r.check_frames()
        print_summary(out, r, cfg.summary_json)
    except UserError as exc:
        if not (safe_mode and config is not None):
            raise
        return _safe_mode(err, config, exc)
    return None


def lines(out: Console, err: Console) -> tuple[app.Say, app.Say, app.Say]:
    """A run's say (stdout), warning and error (stderr) lines."""
    def say(text: str) -> None:
        out.print(text, highlight=False, markup=False, soft_wrap=True)

    def warn(text: str) -> None:
        err.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)

    def error(text: str) -> None:
        err.print(f"[red]error:[/red] {escape(text)}", highlight=False, soft_wrap=True)

    return say, warn, error


def _ended(stats: Any, count: int, reason: str) -> str:
    """Why a collection ended: its count reached, else the loop's reason (the source's end, a SIGTERM, a stop)."""
    return "target reached" if len(stats.kept) >= count else (reason or "stopped")


def print_collect(out: Console, err: Console, cfg: CollectSettings, config: Optional[Path]) -> None:
    """``edge-stpm collect``: with ``config`` (a station file) its values where the command line gave none; a
    progress bar while collecting, then what was kept and what to do next (a warning when short of the count)."""
    if config is not None:
        cfg = collect_values(load(config), cfg)
    say, warn, error = lines(out, err)
    with bar() as progress:
        task = progress.add_task("collect", total=cfg.count, info="")
        stats, sheet, s = app.collect(cfg, say, warn, error, lambda st: progress.update(
            task, advance=1, info=f"{st.duplicates} near-duplicates skipped"))
    out.print(f"{len(stats.kept)} frames kept in {cfg.out / 'train' / 'good'} ({stats.duplicates} near-duplicates "
              f"skipped of {stats.seen} seen; ended: {_ended(stats, cfg.count, s.end_reason)})"
              + (f"; contact sheet {sheet}" if sheet else ""), highlight=False, soft_wrap=True)
    if len(stats.kept) < cfg.count:
        warn(f"only {len(stats.kept)} of the {cfg.count} frames wanted (the source ended or was stopped); run collect "
             "again into the same folder to add more")
    out.print(f"next: edge-stpm train --data {cfg.out} --out runs/first", highlight=False)


def _safe_mode(err: Console, config: Path, exc: UserError) -> int:
    """The error lines (passwords masked), then safe mode served until it stops; its exit code."""
    def check() -> None:
        load(config)

    def log(text: str) -> None:
        err.print(escape(text), highlight=False, soft_wrap=True)

    for line in str(exc).splitlines():
        err.print(f"error: {escape(redact(line))}", highlight=False, soft_wrap=True)
    return safe(config, str(exc).splitlines(), check, log)


def print_summary(out: Console, r: app.RunResult, summary_json: Optional[Path]) -> None:
    """The run's summary: frames, NG, fps and median latencies, how it ended, the recording; the frame path; one
    line per source when there were several; with ``summary_json`` the same written as JSON."""
    s = r.summary
    out.print(f"{s.frames} frames, {s.ng_frames} NG, {s.fps:.1f} fps end-to-end "
              f"(median ms: read {s.ms.get('read', 0):.1f}, infer {s.ms.get('infer', 0):.1f}; capture→verdict "
              f"{s.ms.get('verdict', 0):.1f}, capture→picture {s.ms.get('picture', 0):.1f}); ended: {s.end_reason}" +
              (f"; recording {s.record}" if s.record else "") +
              (f" (+{n - 1} segments)" if s.sources and (n := len(s.sources[0]["record_segments"])) > 1 else "") +
              (f"; {s.failed_frames} frames failed (the model server did not answer)" if s.failed_frames else ""))
    out.print(f"frame path: {r.path_note}", highlight=False, markup=False)
    if len(s.sources) > 1:
        for x in s.sources:
            out.print(f"  [{x['source']}] {x['spec']}: {x['frames']} frames, {x['ng_frames']} NG, {x['dropped']} "
                      f"dropped, {x['reconnects']} reconnects; ended: {x['end_reason']}"
                      + (f"; recording {x['record']}" if x["record"] else ""), highlight=False, markup=False)
    if summary_json:
        write_json(summary_json, dataclasses.asdict(s) | {"backend": r.backend, "frame_path": r.path_note})
