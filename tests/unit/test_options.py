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
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()

# where each rule applies
MODEL_READERS = {"run", "infer", "bench", "build-engine"}            # read any model with --model
CHECKPOINT_ONLY = {"evaluate", "calibrate", "export", "update-memory"}  # truly need the training checkpoint
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
        assert "score scale" in p.help and "1.2" in p.help
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
    rows = [line for line in README.splitlines() if line.startswith("| [`edge-stpm ")]
    assert len(rows) >= len(COMMANDS) - 1
    for row in rows:
        usage = row.split("`")[1]
        name = usage.split()[1]
        assert name in COMMANDS, row
        shown = set(re.findall(r"(--[a-z][a-z0-9-]*)", row))
        missing = shown - names(COMMANDS[name])
        assert not missing, f"README shows {missing} for {name}"


# ---- the option rule: every numeric option declares its range and every enum its choices (edge_stpm/contract/options.py)
import typing

from edge_stpm.cli import _choices
from edge_stpm.contract.options import FREE_TEXT, RANGES


def base_type(p) -> object:
    ann = p.type_descriptor.annotation
    while typing.get_origin(ann) in (typing.Union, list, tuple, getattr(__import__("types"), "UnionType", None)):
        ann = [a for a in typing.get_args(ann) if a is not type(None)][0]
    return ann


def ranged() -> list[tuple[str, object]]:
    return [(n, p) for n, c in sorted(COMMANDS.items()) for p in options(c) if p.min is not None or p.max is not None]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_declares_its_range_or_choices(name: str) -> None:
    for p in options(COMMANDS[name]):
        t = base_type(p)
        if t is bool or p.is_flag or t is Path or p.name == "help":
            continue
        if t in (int, float):
            assert p.min is not None and p.max is not None, f"{name} {p.opts}: numeric option without a declared range"
            assert (p.min, p.max) in RANGES.values(), f"{name} {p.opts}: range not taken from options.RANGES"
        elif typing.get_origin(t) is typing.Literal:
            assert _choices(p), (name, p.opts)
        else:
            assert t is str and p.opts[0] in FREE_TEXT, f"{name} {p.opts}: a {t} option that is neither a choice " \
                                                        "nor a free-text option listed (with its parser) in FREE_TEXT"


def dummy_required(cmd) -> list[str]:
    args: list[str] = []
    for p in cmd.params:
        if p.required:
            args += ([p.opts[0]] if getattr(p, "param_type_name", "") == "option" else []) + ["x"]
    return args


@pytest.mark.parametrize("name,param", ranged(), ids=lambda v: v if isinstance(v, str) else v.opts[0])
def test_each_declared_range_at_both_ends(name: str, param) -> None:
    """The ends are accepted by the parser; one step outside each end is one `error:` line naming the option,
    exit 2, before the command does anything."""
    cmd = COMMANDS[name]
    req = dummy_required(cmd)
    is_int = base_type(param) is int
    step = 1 if is_int else max(abs(param.min), abs(param.max), 1) * 1e-3
    for v in (param.min, param.max):
        cmd.make_context(name, req + [param.opts[0], str(v)])  # raises on a rejected value
    for v in (param.min - step, param.max + step):
        res = CliRunner().invoke(app, [name, *req, param.opts[0], str(v)])
        assert res.exit_code == 2, (v, res.output)
        lines = [l for l in res.output.strip().splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and param.opts[0] in lines[0], res.output
        assert "Traceback" not in res.output


def test_choice_outside_is_one_line() -> None:
    res = CliRunner().invoke(app, ["train", "--data", "x", "--backbone", "vgg"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and res.output.startswith("error:"), res.output
    assert "--backbone" in res.output and "mobilenet_v2" in res.output


def test_choice_names_match_the_training_registries() -> None:
    from edge_stpm.contract import options
    from edge_stpm.training.backbones import BACKBONES
    from edge_stpm.common.images import FIT_MODES
    from edge_stpm.runtime.learn.quantize import CALIB_METHODS
    from edge_stpm.training.model import LOSS_REDUCTIONS
    from edge_stpm.runtime.backends.select import BACKENDS
    from edge_stpm.contract.artifacts import PRECISIONS
    from edge_stpm.runtime.inspector import FRAME_PATHS

    assert set(options.BACKBONE_NAMES) == set(BACKBONES)
    assert set(options.FIT_NAMES) == set(FIT_MODES)
    assert set(options.CALIB_METHOD_NAMES) == set(CALIB_METHODS)
    assert set(options.LOSS_NAMES) == set(LOSS_REDUCTIONS)
    assert set(options.BACKEND_NAMES) == set(BACKENDS)
    from edge_stpm.training.model import MAP_COMBINES

    assert options.MAP_COMBINE_NAMES == MAP_COMBINES
    assert set(options.PRECISION_NAMES) == set(PRECISIONS) == set(options.ENGINE_PRECISION_NAMES)
    assert set(options.FRAME_PATH_NAMES) == set(FRAME_PATHS)


def test_free_text_table_names_real_options() -> None:
    every = set().union(*(names(c) for c in COMMANDS.values()))
    assert set(FREE_TEXT) <= every, set(FREE_TEXT) - every
