"""The house's habits on the torch-free side: ``edge_stpm/common``, ``edge_stpm/contract`` and ``edge_stpm/runtime``
are clean under ruff and mypy, with the configuration in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``) — the same
two commands ``.ci/run`` runs before the suite. Each tool runs once as a subprocess; a tool that is not installed skips
its test (``pip install -e ".[test]"`` brings both). And across ``edge_stpm/``: an import inside a function is one of
the documented doors, every other import sits at the top of its module."""
from __future__ import annotations

import ast
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


# Imports inside functions are doors, each with its reason (docs/architecture.md, "Imports inside functions: the
# doors"); every other import sits at the top of its module. By imported module prefix:
TRAINING_SIDE = ("torch", "torchvision", "sklearn", "matplotlib", "edge_stpm.training")  # not from training/ itself
OPTIONAL = ("tensorrt", "cuda", "pypylon", "asyncua", "cryptography", "pymodbus", "paho", "tritonclient",
            "google.protobuf", "triton_python_backend_utils")
STARTUP = {"edge_stpm/cli.py": ("edge_stpm",), "edge_stpm/cli_reference.py": ("edge_stpm",)}


def _imported(path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not node.level:
        return [node.module or ""]
    pkg = list(path.relative_to(ROOT).with_suffix("").parts)
    pkg = pkg if path.name == "__init__.py" else pkg[:-1]
    return [".".join(pkg[: len(pkg) - (node.level - 1)] + ([node.module] if node.module else []))]


def _door(rel: str, module: str) -> bool:
    doors = OPTIONAL + STARTUP.get(rel, ()) + (() if rel.startswith("edge_stpm/training/") else TRAINING_SIDE)
    return any(module == d or module.startswith(d + ".") for d in doors)


def imports_inside_functions_not_doors(root: Path = ROOT) -> list[str]:
    out = []
    for path in sorted((root / "edge_stpm").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
                out += [f"{rel}:{n.lineno}: {ast.unparse(n)}" for n in inner
                        if not all(_door(rel, m) for m in _imported(path, n))]
    return sorted(set(out))


def test_imports_inside_functions_are_documented_doors() -> None:
    bad = imports_inside_functions_not_doors()
    assert bad == [], "imports inside functions that are no documented door (move them to the top):\n" + "\n".join(bad)
