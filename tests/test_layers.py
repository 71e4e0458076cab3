"""House rules for the package's shape, read from the source: no import cycles (lazy imports inside functions
count), the runtime side never imports training, evaluation or export code, and it imports without torch.
(``runtime.torch``, the PyTorch backend for checkpoints, is opened lazily only when a checkpoint is given.)"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "edge_stpm"
RUNTIME_SIDE = ("artifacts", "data", "errors", "files", "progress", "threads", "overlay", "inspector", "infer",
                "runtime.base", "runtime.onnx", "runtime.select", "runtime.tensorrt", "runtime.cuda",
                "app.sources", "app.loop", "app.picture", "app.line", "app.http", "app.sinks.base", "app.sinks.events",
                "app.sinks.recording", "app.sinks.snapshots", "app.sinks.window", "app.sinks.http", "app.sinks.record",
                "app.sinks.mqtt", "app.sinks.plc", "app.sinks.opcua", "app.basler", "app.pixels", "app.frames", "triton", "runtime.triton", "options")
TRAINING_SIDE = ("train", "evaluate", "calibrate", "export", "demo", "metrics", "figures", "devices", "synth")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) or "__init__"


def imports(path: Path) -> set[str]:
    """edge_stpm modules imported anywhere in ``path`` (top level or inside functions)."""
    me = module_name(path).split(".")
    pkg = me[:-1] if path.name != "__init__.py" else me
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
            mod = ".".join(base + ([node.module] if node.module else []))
            names = [mod] if node.module else [".".join(base + [a.name]) for a in node.names]
            for n in names:
                for a in (node.names if node.module else []):
                    cand = f"{n}.{a.name}" if n else a.name
                    if (PKG / (cand.replace(".", "/") + ".py")).is_file():
                        out.add(cand)
                out.add(n)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edge_stpm."):
            out.add(node.module[len("edge_stpm."):])
    return {o for o in out if o and o != module_name(path) and ((PKG / (o.replace(".", "/") + ".py")).is_file()
                                                             or (PKG / o.replace(".", "/") / "__init__.py").is_file())}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PKG.rglob("*.py")}


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


def test_runtime_side_never_imports_training_evaluation_or_export() -> None:
    g = graph()
    bad = [(a, b) for a in RUNTIME_SIDE for b in g[a]
           if b.split(".")[0] in TRAINING_SIDE or b in ("checkpoint", "model", "backbones")]
    assert bad == [], bad


def test_runtime_side_imports_without_torch() -> None:
    code = ("import sys\nfor m in ('torch', 'torchvision', 'sklearn', 'matplotlib'): sys.modules[m] = None\n"
            + "".join(f"import edge_stpm.{m}\n" for m in RUNTIME_SIDE) + "import edge_stpm.cli\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
