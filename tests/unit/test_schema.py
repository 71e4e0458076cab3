"""Every artefact edge-stpm reads back is checked against its schema before use (edge_stpm/contract/schema.py): a bundle's
manifest, a graph's metadata, an engine's header (and an old engine's JSON sidecar), a checkpoint. A file that
deviates is one line naming the file and the field, exit 2 — never a KeyError/TypeError. Property tests throw
random JSON documents and random bytes at the readers: a value or one UserError, nothing else."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from edge_stpm.contract import artifacts
from edge_stpm.training import checkpoint
from edge_stpm.common.errors import UserError
from edge_stpm.contract.schema import CHECKPOINT, GRAPH, MANIFEST, check

from helpers.edge_cli import cli, one_error

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
                    max_leaves=12)


def image(synth_dir: Path) -> Path:
    return next((synth_dir / "test" / "good").iterdir())


def graph_md(exported: Path) -> dict[str, Any]:
    return artifacts.read_onnx_metadata(exported / "model_fp32.onnx")


# --- the manifest ---------------------------------------------------------------------------------------------

MANIFEST_CASES: list[tuple[str, Callable[[dict], Any], str]] = [
    ("files a list", lambda m: m | {"files": []}, "field files: [] is not of type 'object'"),
    ("entry a string", lambda m: m | {"files": {**m["files"], "model_fp32.onnx": "abc"}}, "field files.model_fp32.onnx:"),
    ("sha256 a number", lambda m: m | {"files": {**m["files"], "model_fp32.onnx": {"sha256": 12, "bytes": 1}}},
     "field files.model_fp32.onnx.sha256: 12 is not of type 'string'"),
    ("bytes missing", lambda m: m | {"files": {**m["files"], "model_fp32.onnx": {"sha256": "0" * 64}}},
     "field files.model_fp32.onnx.bytes is missing"),
    ("a path outside", lambda m: m | {"files": {**m["files"], "../../etc/passwd": {"sha256": "0" * 64, "bytes": 1}}},
     "'../../etc/passwd' does not match the pattern of a file name inside the bundle"),
    ("no files", lambda m: {k: v for k, v in m.items() if k != "files"}, "field files is missing"),
    ("not an object", lambda m: [m], "is not an edge-stpm bundle manifest"),
]


@pytest.mark.parametrize("case", [c[0] for c in MANIFEST_CASES])
def test_bad_manifest_is_one_line_naming_the_field(case: str, exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    _, change, said = next(c for c in MANIFEST_CASES if c[0] == case)
    bundle = tmp_path / "bundle"
    shutil.copytree(exported, bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps(change(m)))
    one_error(cli("infer", image(synth_dir), "--model", bundle, "--out", tmp_path / "out"), said)
    assert "manifest.json" in cli("infer", image(synth_dir), "--model", bundle, "--out", tmp_path / "o").stderr


# --- graph metadata and engine headers ----------------------------------------------------------------------

GRAPH_CASES: list[tuple[str, Callable[[dict], Any], str]] = [
    ("image_size a string", lambda md: md | {"image_size": "128"}, "field image_size: '128' is not of type 'integer'"),
    ("no thresholds", lambda md: {k: v for k, v in md.items() if k != "thresholds"}, "field thresholds is missing"),
    ("pixel threshold missing", lambda md: md | {"thresholds": {"image": 1.0}}, "field thresholds.pixel is missing"),
    ("negative threshold", lambda md: md | {"thresholds": {"image": -1.0, "pixel": 1.0}}, "field thresholds.image"),
    ("unknown backbone", lambda md: md | {"backbone": "vgg"}, "field backbone: 'vgg' is not one of"),
    ("batch 0", lambda md: md | {"batch": 0}, "field batch: 0 is less than the minimum of 1"),
    ("frame graph without its size", lambda md: md | {"kind": "frame"}, "field frame is missing"),
    ("level weight a string", lambda md: md | {"level_weights": [1.0, "a", 1.0]}, "field level_weights.1"),
    ("a list", lambda md: [md], "is not of type 'object'"),
]


def with_metadata(src: Path, dst: Path, md: Any) -> Path:
    model = onnx.load(str(src))
    for p in model.metadata_props:
        if p.key == artifacts.METADATA_KEY:
            p.value = json.dumps(md)
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("case", [c[0] for c in GRAPH_CASES])
def test_bad_graph_metadata_is_one_line_naming_the_field(case: str, exported: Path, synth_dir: Path,
                                                         tmp_path: Path) -> None:
    _, change, said = next(c for c in GRAPH_CASES if c[0] == case)
    graph = with_metadata(exported / "model_fp32.onnx", tmp_path / "model_fp32.onnx", change(graph_md(exported)))
    r = cli("infer", image(synth_dir), "--model", graph, "--out", tmp_path / "out")
    one_error(r, said)
    assert f"{graph} metadata: field" in r.stderr


@pytest.mark.parametrize("case", [c[0] for c in GRAPH_CASES])
def test_bad_engine_header_and_sidecar_name_the_field(case: str, exported: Path, tmp_path: Path) -> None:
    _, change, said = next(c for c in GRAPH_CASES if c[0] == case)
    md = change(graph_md(exported) | {"format": "edge-stpm-engine"})
    eng = tmp_path / "model_fp16.engine"
    eng.write_bytes(artifacts.pack_engine(md, b"plan"))  # type: ignore[arg-type]
    with pytest.raises(UserError, match="header: field") as info:
        artifacts.read_engine(eng)
    assert said in str(info.value)
    old = tmp_path / "old.engine"  # an engine of an earlier round: a plain plan and a JSON sidecar
    old.write_bytes(b"plan")
    artifacts.sidecar(old).write_text(json.dumps(md))
    with pytest.raises(UserError, match=str(artifacts.sidecar(old)) + ": field") as info:
        artifacts.read_engine(old)
    assert said in str(info.value)


def test_good_artefacts_pass_their_schemas(exported: Path, trained: Path) -> None:
    md = graph_md(exported)
    assert check(md, GRAPH, "g", "") is md
    assert check(json.loads((exported / "manifest.json").read_text()), MANIFEST, "m", "")
    ck = checkpoint.read(trained / "model.pt")
    assert check(ck, CHECKPOINT, "c", "") is ck and "_path" not in checkpoint.meta(ck)
    eng = exported.parent / "roundtrip.engine"
    artifacts.write_engine(eng, md | {"format": "edge-stpm-engine"}, b"plan")
    assert artifacts.read_engine(eng)[1] == b"plan"


# --- checkpoints ----------------------------------------------------------------------------------------------

CHECKPOINT_CASES: list[tuple[str, Callable[[dict], Any], str]] = [
    ("image_size a float", lambda ck: ck | {"image_size": 128.5}, "field image_size: 128.5 is not of type 'integer'"),
    ("thresholds a list", lambda ck: ck | {"thresholds": [1, 2]}, "field thresholds: [1, 2] is not of type 'object'"),
    ("no student", lambda ck: {k: v for k, v in ck.items() if k != "student"}, "field student is missing"),
    ("a weight not a tensor", lambda ck: ck | {"student": ck["student"] | {"features.0.0.weight": [1.0]}},
     "field student.features.0.0.weight is not a tensor"),
    ("weights of another backbone", lambda ck: ck | {"student": {"fc.weight": torch.zeros(2)}},
     "field student: weights do not fit mobilenet_v2"),
    ("fit unknown", lambda ck: ck | {"fit": "zoom"}, "field fit: 'zoom' is not one of"),
]


@pytest.mark.parametrize("case", [c[0] for c in CHECKPOINT_CASES])
def test_bad_checkpoint_is_one_line_naming_the_field(case: str, trained: Path, synth_dir: Path, tmp_path: Path) -> None:
    _, change, said = next(c for c in CHECKPOINT_CASES if c[0] == case)
    ck = torch.load(trained / "model.pt", map_location="cpu", weights_only=True)
    bad = tmp_path / "model.pt"
    torch.save(change(ck), bad)
    one_error(cli("infer", image(synth_dir), "--model", bad, "--out", tmp_path / "out"), f"{bad}: {said}")


# --- property tests: random documents and bytes -------------------------------------------------------------

def raises_only_user_error(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)


@pytest.mark.parametrize("schema", ["manifest", "graph", "checkpoint"])
def test_random_documents_pass_or_fail_in_one_line(schema: str) -> None:
    chosen = {"manifest": MANIFEST, "graph": GRAPH, "checkpoint": CHECKPOINT}[schema]

    @FUZZ
    @given(st.one_of(JSON, st.dictionaries(st.sampled_from(sorted(chosen["properties"])), JSON, max_size=8)))
    def one(doc: Any) -> None:
        raises_only_user_error(lambda: check(doc, chosen, "f.json", "fix"))

    one()


def test_random_bytes_at_every_reader(tmp_path: Path) -> None:
    from edge_stpm.common.images import read_image

    readers: dict[str, Callable[[Path], Any]] = {
        "image.png": read_image, "model.onnx": artifacts.read_onnx_metadata, "model.engine": artifacts.read_engine,
        "model.pt": checkpoint.read, "manifest.json": lambda p: artifacts.read_manifest(p.parent)}

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                      HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(sorted(readers)), st.one_of(st.binary(max_size=512),
                                                        st.binary(max_size=64).map(lambda b: artifacts.ENGINE_MAGIC + b),
                                                        JSON.map(lambda d: json.dumps(d).encode())))
    def one(name: str, blob: bytes) -> None:
        path = tmp_path / name
        path.write_bytes(blob)
        raises_only_user_error(lambda: readers[name](path))

    one()
