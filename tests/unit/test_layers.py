"""House rules for the package's shape, read from the source. The folders say the sides:

- ``edge_stpm/common/`` — the bottom: helpers both sides use (errors, files, images, progress, threads, redact,
  safezip, bind); imports nothing of edge_stpm but itself;
- ``edge_stpm/contract/`` — below both sides, on ``common``: imports nothing of the runtime or training side;
- ``edge_stpm/runtime/`` — the box: imports the contract and itself, never the training side (one door: a
  checkpoint is opened through ``training.torch_backend``, lazily, from ``runtime.backends.select``);
- ``edge_stpm/training/`` — PyTorch: may use both;
- ``cli.py`` (with ``cli_reference.py``, the commands page made from its help) and ``bench.py`` at the top span both sides (their training imports are lazy).

No import cycles (lazy imports inside functions count); every common, contract and runtime module imports without torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "edge_stpm"
DOOR = ("runtime.backends.select", "training.torch_backend")  # the one runtime → training edge (lazy)
SERVER_ONLY = {"runtime.triton_repo.model"}  # copied into a Triton model repository; imports Triton's own utils


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "__init__"


MODULES = {module_name(p) for p in PKG.rglob("*.py")}


def resolve(mod: str, names: list[str]) -> set[str]:
    """The edge_stpm modules that ``from edge_stpm.<mod> import names`` loads (a name may be a submodule)."""
    out = {mod} if mod in MODULES or not mod else set()
    out |= {f"{mod}.{n}" if mod else n for n in names if (f"{mod}.{n}" if mod else n) in MODULES}
    return {o for o in out if o}


def imports(path: Path) -> set[str]:
    """edge_stpm modules imported anywhere in ``path`` (top level or inside functions, relative or absolute)."""
    me = module_name(path).split(".")
    pkg = me if path.name == "__init__.py" else me[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[: len(pkg) - (node.level - 1)]
            out |= resolve(".".join(base + ([node.module] if node.module else [])), [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edge_stpm":
            out |= resolve(node.module[len("edge_stpm."):] if "." in node.module else "", [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            out |= {a.name[len("edge_stpm."):] for a in node.names if a.name.startswith("edge_stpm.")}
    return out - {module_name(path)}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PKG.rglob("*.py")}


def side(module: str) -> str:
    return module.split(".")[0] if module.split(".")[0] in ("common", "contract", "runtime", "training") else "top"


def test_every_module_lives_on_a_side() -> None:
    assert {m for m in MODULES if side(m) == "top"} == {"__init__", "cli", "cli_reference", "bench"}
    assert {side(m) for m in MODULES} == {"top", "common", "contract", "runtime", "training"}


def test_no_import_cycles() -> None:
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m] if m in stack else [n, m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [n])
    assert cycles == [], cycles


def test_common_imports_only_itself_the_contract_neither_side_and_the_runtime_never_the_training_side() -> None:
    g = graph()
    common = [(a, b) for a in g if side(a) == "common" for b in g[a] if side(b) != "common"]
    assert common == [], common
    contract = [(a, b) for a in g if side(a) == "contract" for b in g[a] if side(b) not in ("common", "contract")
                and b != "__init__"]
    assert contract == [], contract
    runtime = [(a, b) for a in g if side(a) == "runtime" for b in g[a] if side(b) in ("training", "top") and (a, b) != DOOR]
    assert runtime == [], runtime
    assert DOOR[1] in g[DOOR[0]], "the checkpoint door is where the docstring says"


def test_runtime_side_imports_without_torch() -> None:
    mods = sorted(m for m in MODULES if side(m) in ("common", "contract", "runtime") and m not in SERVER_ONLY)
    assert len(mods) > 40
    code = ("import sys\nfor m in ('torch', 'torchvision', 'sklearn', 'matplotlib'): sys.modules[m] = None\n"
            + "".join(f"import edge_stpm.{m}\n" for m in mods) + "import edge_stpm.cli, edge_stpm.bench\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
