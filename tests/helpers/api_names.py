"""Resolve every TensorRT / cuda-python name our code uses against the *real* Python bindings of one version.

No TensorRT or GPU is needed: the binding wheels (``tensorrt-bindings`` 8.6, ``tensorrt-cu12-bindings`` 10.x,
``tensorrt-cu13-bindings`` 11.x, ``cuda-bindings`` 12.x/13.x) are downloaded once into a cache, the TensorRT ones
import against tiny stand-in ``libnvinfer*`` shared objects compiled here from a few lines of C (only the entry
points the bindings resolve at load time; nothing can be built or run with them), and the names are looked up
in the real modules. A name, enum member, method or keyword argument that does not exist fails.

How names are found: the source files are parsed (``ast``); ``trt.X.Y`` is looked up from the module; calls and
attributes on variables with the conventional names in ``VAR_TYPES`` (``builder``, ``network``, ``config``, ...)
are looked up on that class, and a call's result type is read from its pybind11 signature, so
``layer.get_output(j).dtype`` is checked on ``ITensor``. Flags that code passes by name (``BuildPlan``) are
checked for every precision of the version. Functions in a module's ``VERSION_GATED`` are checked only for the
majors listed there.

Run as a script inside the subprocess: ``python api_names.py tensorrt|cuda FILE...`` prints JSON
``{"version": ..., "checked": N, "missing": [...]}``.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGE_STPM_WHEEL_CACHE", Path.home() / ".cache" / "edge-stpm" / "binding-wheels"))

TRT_WHEELS = {8: "tensorrt-bindings==8.6.1", 10: "tensorrt-cu12-bindings>=10.3,<11", 11: "tensorrt-cu13-bindings>=11,<12"}
CUDA_WHEELS = {12: "cuda-bindings>=12.4,<13", 13: "cuda-bindings>=13,<14"}

VAR_TYPES = {"builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser", "config": "IBuilderConfig",
             "cache": "ITimingCache", "layer": "ILayer", "error": "ParserError", "runtime": "Runtime",
             "engine": "ICudaEngine", "context": "IExecutionContext", "tensor": "ITensor"}
ROOTS = {"tensorrt": "trt", "cuda": "rt"}

STUBS = {
    "libnvinfer": """void* createInferBuilder_INTERNAL(void){return 0;} void* createInferRefitter_INTERNAL(void){return 0;}
void* createInferRuntime_INTERNAL(void){return 0;} void* getBuilderPluginRegistry(void){return 0;}
void* getPluginRegistry(void){return 0;} int getInferLibVersion(void){return 0;} void* getLogger(void){return 0;}""",
    "libnvonnxparser": """void* createNvOnnxParser_INTERNAL(void){return 0;} void* createNvOnnxParserRefitter_INTERNAL(void){return 0;}
int getNvOnnxParserVersion(void){return 0;}""",
    "libnvinfer_plugin": "int initLibNvInferPlugins(void* logger, const char* ns){return 1;}",
    "libnvparsers": """void* _ZN11nvuffparser15createUffParserEv(void){return 0;} void _ZN11nvuffparser8FieldMapC1EPKcPKvNS_9FieldTypeEi(void){}
void* _ZN14nvcaffeparser117createCaffeParserEv(void){return 0;} void _ZN14nvcaffeparser123shutdownProtobufLibraryEv(void){}""",
}


# --- preparing an environment (main test process) ------------------------------------------------------------

def _download(spec: str, dest: Path) -> Path:
    wheels = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    if not wheels:
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(dest),
                        spec], check=True, capture_output=True, timeout=600)
        wheels = sorted(dest.glob("*.whl"))
    return wheels[-1]


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", spec).strip("_")


def _extract(wheel: Path, dest: Path) -> Path:
    if not (dest / ".done").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        with zipfile.ZipFile(wheel) as z:
            z.extractall(dest)
        (dest / ".done").write_text(wheel.name)
    return dest


def stub_libraries(major: int) -> Path:
    """Compile the stand-in TensorRT libraries of one major version (``cc`` needed)."""
    out = CACHE / "stubs" / str(major)
    out.mkdir(parents=True, exist_ok=True)
    names = ["libnvinfer", "libnvonnxparser", "libnvinfer_plugin"] + (["libnvparsers"] if major == 8 else [])
    for name in names:
        so = out / f"{name}.so.{major}"
        if so.is_file():
            continue
        src = out / f"{name}.c"
        src.write_text(STUBS[name] + "\n")
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True, capture_output=True, timeout=120)
    return out


def environment(kind: str, major: int) -> dict[str, str]:
    """Environment variables for a subprocess that imports the real bindings of ``kind`` (tensorrt|cuda) ``major``."""
    spec = (TRT_WHEELS if kind == "tensorrt" else CUDA_WHEELS)[major]
    wheel = _download(spec, CACHE / "wheels" / _slug(spec))
    site = _extract(wheel, CACHE / "site" / _slug(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if kind == "tensorrt":
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(stub_libraries(major))] + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
    return env


def resolve_in_subprocess(kind: str, major: int, files: list[Path]) -> dict[str, Any]:
    env = environment(kind, major)
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), kind, *map(str, files)], env=env,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"name check failed to run for {kind} {major}:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- the walker (runs in the subprocess, next to the real module) ------------------------------------------------

def _signature(obj: Any) -> str:
    return (getattr(obj, "__doc__", None) or "").strip().splitlines()[0] if getattr(obj, "__doc__", None) else ""


def _return_class(mod: Any, obj: Any) -> Any:
    m = re.search(r"->\s*([\w.]+)", _signature(obj))
    if not m:
        return None
    return getattr(mod, m.group(1).rsplit(".", 1)[-1], None)


def _kwargs_ok(obj: Any, names: list[str]) -> list[str]:
    sig = _signature(obj)
    if not names or not sig or "(" not in sig:
        return []
    params = re.findall(r"(\w+)\s*:", sig.split("(", 1)[1])
    return [k for k in names if k not in params]


class Walker:
    def __init__(self, mod: Any, root: str, major: int) -> None:
        self.mod, self.root, self.major = mod, root, major
        self.missing: list[str] = []
        self.checked = 0

    def typeof(self, node: ast.AST, where: str) -> Any:
        """The binding object (module, class, enum, function) an expression denotes, or None when unknown."""
        if isinstance(node, ast.Name):
            if node.id == self.root:
                return self.mod
            cls = VAR_TYPES.get(node.id) if self.root == "trt" else None
            return getattr(self.mod, cls, None) if cls else None
        if isinstance(node, ast.Attribute):
            base = self.typeof(node.value, where)
            if base is None:
                return None
            self.checked += 1
            if not hasattr(base, node.attr):
                self.missing.append(f"{where}: {getattr(base, '__name__', base)}.{node.attr}")
                return None
            found = getattr(base, node.attr)
            return None if isinstance(found, property) else found  # a property's value type is unknown here
        if isinstance(node, ast.Call):
            fn = self.typeof(node.func, where)
            if fn is None:
                return None
            bad = _kwargs_ok(fn, [k.arg for k in node.keywords if k.arg])
            self.missing += [f"{where}: keyword {k}= of {getattr(fn, '__name__', fn)}" for k in bad]
            return _return_class(self.mod, fn)
        return None

    def walk(self, tree: ast.AST, where: str) -> None:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Attribute, ast.Call)):
                self.typeof(node, f"{where}:{getattr(node, 'lineno', '?')}")


def check_source(mod: Any, kind: str, major: int, source: str, name: str, gated: dict[str, tuple[int, ...]]) -> Walker:
    w = Walker(mod, ROOTS[kind], major)
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in gated and major not in gated[node.name]:
            continue
        w.walk(node, name)
    return w


def _main(kind: str, files: list[str]) -> None:
    if kind == "tensorrt":
        import tensorrt_bindings as mod

        sys.modules["tensorrt"] = mod
        major = int(mod.__version__.split(".")[0])
    else:
        from cuda.bindings import runtime as mod
        import cuda.bindings

        mod.__version__ = cuda.bindings.__version__
        major = int(mod.__version__.split(".")[0])
    missing, checked = [], 0
    for f in files:
        src = Path(f).read_text()
        gated = {}
        m = re.search(r"^VERSION_GATED = (\{.*\})$", src, re.M)
        if m:
            gated = ast.literal_eval(m.group(1))
        w = check_source(mod, kind, major, src, Path(f).name, gated)
        missing += w.missing
        checked += w.checked
    if kind == "tensorrt":
        from edge_stpm.training.export.tensorrt_engines import build_plan

        for prec in ("fp32", "fp16", "int8"):
            plan = build_plan(mod.__version__, prec)
            for enum, names in (("NetworkDefinitionCreationFlag", plan.network_flags),
                                ("BuilderFlag", plan.builder_flags + plan.cleared_flags)):
                for n in names:
                    checked += 1
                    if not hasattr(getattr(mod, enum), n):
                        missing.append(f"build_plan({mod.__version__}, {prec}): {enum}.{n}")
    print(json.dumps({"version": mod.__version__, "checked": checked, "missing": sorted(set(missing))}))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2:])
