"""The house's habits on the torch-free side: ``edge_stpm/common``, ``edge_stpm/contract`` and ``edge_stpm/runtime``
are clean under ruff and mypy, with the configuration in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``) — the same two commands
``.ci/run`` runs before the suite. Each tool runs once as a subprocess; a tool that is not installed skips its test
(``pip install -e ".[test]"`` brings both)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ["edge_stpm/common", "edge_stpm/contract", "edge_stpm/runtime"]


def _run(tool: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e \".[test]\")")
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_ruff_clean() -> None:
    r = _run("ruff", ["check", "--no-fix", "--output-format", "concise", *CHECKED], timeout=120)
    assert r.returncode == 0, f"ruff check {' '.join(CHECKED)} found:\n{r.stdout}{r.stderr}"


def test_mypy_clean() -> None:
    # no paths: pyproject's [tool.mypy] files names the checked folders (and its overrides the untyped modules)
    r = _run("mypy", [], timeout=600)
    assert r.returncode == 0, f"mypy found:\n{r.stdout}{r.stderr}"
