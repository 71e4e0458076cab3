"""One vocabulary across commands, checked on every option of every command (table-driven), and README ↔ help."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edge_stpm.cli import app

COMMAND = typer.main.get_command(app)
COMMANDS = dict(COMMAND.commands)  # type: ignore[attr-defined]
README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

# where each rule applies
MODEL_READERS = {"run", "infer", "bench", "build-engine"}            # read any model with --model
CHECKPOINT_ONLY = {"evaluate", "calibrate", "export"}                # truly need the training checkpoint
CPU_MODEL_RUNNERS = {"train", "evaluate", "calibrate", "export", "run", "infer", "bench", "demo"}
PLURAL = {"--precisions", "--backends", "--batches", "--thresholds", "--devices"}


def options(cmd) -> list:
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option"]


def names(cmd) -> set[str]:
    return {n for p in options(cmd) for n in p.opts + p.secondary_opts}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_option_rules(name: str) -> None:
    cmd = COMMANDS[name]
    opts = names(cmd)
    for p in options(cmd):
        assert p.help and p.help.strip(), f"{name} {p.opts}: no help text"
        assert not any(n.startswith("--no-no-") for n in p.opts + p.secondary_opts), p.opts
    assert not opts & PLURAL, f"{name}: plural option names {opts & PLURAL} (rule: singular, comma list where several)"
    assert "--sigma" not in opts, "map smoothing is --smoothing (sigma is a threshold method)"
    if name in MODEL_READERS:
        assert "--model" in opts, name
    if "--checkpoint" in opts:
        p = next(p for p in options(cmd) if "--checkpoint" in p.opts + p.secondary_opts)
        if "--model" not in p.opts:  # bench keeps --checkpoint only as an alias of --model
            assert name in CHECKPOINT_ONLY and "training checkpoint" in p.help, name
    if "--threshold" in opts:
        p = next(p for p in options(cmd) if "--threshold" in p.opts)
        assert name in {"run", "infer"} and p.bare_type() == "float", name
        assert "normalised" in p.help and "1.2" in p.help
    if name in ("train", "calibrate"):
        assert "--threshold-method" in opts and "--smoothing" in opts
    for p in options(cmd):
        if "--device" in p.opts:
            assert p.default == "auto", name
        if any(o in ("--precision", "--backend", "--batch") for o in p.opts) and name in ("bench", "export"):
            assert "comma list" in p.help.lower() or name == "export" and "--batch" in p.opts, (name, p.opts)
    if name in CPU_MODEL_RUNNERS:
        assert "--threads" in opts, f"{name}: runs models on a CPU but has no --threads"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_has_no_type_tags(name: str) -> None:
    res = CliRunner().invoke(app, [name, "--help"], terminal_width=100)
    assert res.exit_code == 0
    assert not re.search(r"<(bool|str|int|float|path)>", res.output), res.output
    assert "--no-no-" not in res.output


def test_readme_commands_agree_with_help() -> None:
    """Every command the README's table lists exists, and every --option it shows for it is a real option."""
    rows = [line for line in README.splitlines() if line.startswith("| `edge-stpm ")]
    assert len(rows) >= len(COMMANDS) - 1
    for row in rows:
        usage = row.split("`")[1]
        name = usage.split()[1]
        assert name in COMMANDS, row
        shown = set(re.findall(r"(--[a-z][a-z0-9-]*)", row))
        missing = shown - names(COMMANDS[name])
        assert not missing, f"README shows {missing} for {name}"
