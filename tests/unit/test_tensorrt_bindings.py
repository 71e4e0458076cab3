"""Every TensorRT and cuda-python name the code uses exists in the real bindings of each version we target:
TensorRT 8.6 (JetPack 6.0), 10.x (JetPack 6.1/6.2, desktop) and 11.x; cuda-bindings 12.x (CUDA 12 drivers,
JetPack 6) and 13.x. The wheels are real (PyPI); TensorRT's libraries are stand-ins compiled here, so nothing is
built or run — only names are resolved (see ``helpers/api_names.py``). Skips only where no C compiler or no wheel exists."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import api_names

ROOT = Path(__file__).resolve().parents[2]
TRT_FILES = [ROOT / "edge_stpm" / "training" / "export" / "tensorrt_engines.py",
             ROOT / "edge_stpm" / "runtime" / "backends" / "tensorrt_backend.py"]
CUDA_FILES = [ROOT / "edge_stpm" / "runtime" / "backends" / "cuda.py"]


def _run(kind: str, major: int, files: list[Path]) -> dict:
    if kind == "tensorrt" and shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build the stand-in TensorRT libraries")
    try:
        return api_names.resolve_in_subprocess(kind, major, files)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot download the {kind} {major} binding wheel (no registry access?): {exc.stderr!s:.200}")


@pytest.mark.parametrize("major,version_prefix", [(8, "8.6"), (10, "10."), (11, "11.")])
def test_every_tensorrt_name_resolves(major: int, version_prefix: str) -> None:
    r = _run("tensorrt", major, TRT_FILES)
    assert r["version"].startswith(version_prefix)
    assert r["checked"] >= 80, r  # measured: 124 (8.6), 92 (10.x), 89 (11.x) names and flags
    assert r["missing"] == [], r["missing"]


@pytest.mark.parametrize("major", [12, 13])
def test_every_cuda_python_name_resolves(major: int) -> None:
    r = _run("cuda", major, CUDA_FILES)
    assert r["version"].startswith(f"{major}.")
    assert r["checked"] >= 20, r  # measured: 28
    assert r["missing"] == [], r["missing"]


BAD_FIXTURE = '''
def build(trt, builder):
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP61)                     # misspelt enum member
    config.set_timing_cache(None, ignore_mismatches=False)    # misspelt keyword
    network = builder.create_network(0)
    layer = network.get_layer(0)
    layer.get_output(0).dtyp                                  # misspelt attribute of a call's result (ITensor)
    context = None
    context.execute_async_v2(0)                               # removed in TensorRT 10
'''


def test_misspelt_names_in_a_fixture_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad_fixture.py"
    bad.write_text(BAD_FIXTURE)
    r = _run("tensorrt", 10, [bad])
    text = "\n".join(r["missing"])
    for needle in ("BuilderFlag.FP61", "keyword ignore_mismatches=", "ITensor.dtyp", "execute_async_v2"):
        assert needle in text, text


def test_version_facts_from_the_real_bindings(tmp_path: Path) -> None:
    """The facts the build plan relies on, read from the bindings themselves."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f(trt):\n    trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH\n"
                     "    trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED\n    trt.BuilderFlag.FP16\n"
                     "    trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS\n    trt.BuilderFlag.TF32\n")
    missing = {m: {x.split(": ", 1)[1] for x in _run("tensorrt", m, [probe])["missing"]} for m in (8, 10, 11)}
    assert missing[8] == {"NetworkDefinitionCreationFlag.STRONGLY_TYPED"}
    assert missing[10] == set()
    assert missing[11] == {"NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "BuilderFlag.FP16",
                           "BuilderFlag.OBEY_PRECISION_CONSTRAINTS"}
