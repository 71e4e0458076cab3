"""The commands page (docs/commands.md), generated from the CLI's own help — each command's help text and every
option's help, range, choices and default — so it cannot go stale:

    python -m edge_stpm.cli_reference > docs/commands.md

``tests/unit/test_docs.py`` checks the committed page is what this prints.
"""
from __future__ import annotations

import re
import sys
from typing import Any, Iterator

import typer.main
from typer._click.core import Context

HEADER = ("# Commands\n\nGenerated from the CLI's own help (`python -m edge_stpm.cli_reference > docs/commands.md`; a "
          "test checks it is fresh): each command's `--help` as a page. `edge-stpm COMMAND --help` prints the same.\n")


def _walk(group: Any, prefix: str = "edge-stpm") -> Iterator[tuple[str, Any]]:
    """(full name, command) of every command under ``group``, in the order ``--help`` lists them."""
    for name, cmd in group.commands.items():
        full = f"{prefix} {name}"
        if hasattr(cmd, "commands"):
            yield from _walk(cmd, full)
        else:
            yield full, cmd


def _cell(text: str) -> str:
    """One table cell: one line, pipes escaped, this machine's data folder written as its default (the page is the same
    wherever it is generated)."""
    from edge_stpm.common.files import data_dir

    text = " ".join(text.split()).replace(str(data_dir()), "~/.local/share/edge-stpm")
    return text.replace("|", "\\|")


def _usage(full: str, cmd: Any, ctx: Any) -> str:
    args = [p.name.upper() + ("…" if p.nargs == -1 else "") for p in cmd.params if p.param_type_name == "argument"]
    return f"{full} [OPTIONS]" + "".join(f" {a}" for a in args)


def _option_rows(cmd: Any, ctx: Any) -> list[str]:
    rows = []
    for p in cmd.params:
        if p.param_type_name == "argument":
            rows.append(f"| `{p.name.upper()}` | {_cell(p.help or '')} |")
            continue
        rec = p.get_help_record(ctx)
        if rec is None:
            continue
        names, text = rec
        names = re.sub(r"\s+None$", "", names)  # the vendored click's metavar of untyped paths
        rows.append(f"| `{_cell(names)}` | {_cell(text)} |")
    return rows


def _anchor(full: str) -> str:
    return full.replace(" ", "-")


def markdown() -> str:
    """The whole page."""

    from edge_stpm.cli import app

    root = typer.main.get_command(app)
    cmds = list(_walk(root))
    out = [HEADER, "| command | what it does |", "|---|---|"]
    out += [f"| [`{full}`](#{_anchor(full)}) | {_cell(cmd.get_short_help_str(100))} |" for full, cmd in cmds]
    for full, cmd in cmds:
        ctx = Context(cmd, info_name=full)
        paras = [" ".join(p.split()) for p in (cmd.help or "").split("\n\n")]
        out += ["", f'<a id="{_anchor(full)}"></a>', f"## {full}", "", f"`{_usage(full, cmd, ctx)}`", "", *[
            x for p in paras for x in (p, "")], "| option | what |", "|---|---|", *_option_rows(cmd, ctx)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
