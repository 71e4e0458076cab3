"""Triton Inference Server: ``edge-stpm triton-repo`` writes a model repository whose configs parse with Triton's own
ModelConfig protobuf; the real tritonserver of the nvidia-pytriton wheel (CPU, Python backend; .ci/fetch_triton.sh)
serves its Python-backend model on loopback, and ``run`` / ``infer`` with ``--model grpc://…`` give the local ONNX
Runtime results; the server killed mid-run and restarted costs counted frames, never the run. The ONNX Runtime and
TensorRT backends are not in that wheel: their configs are only parsed here."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.line_parts import TRITON_ENV, PacedSource, TritonServer, triton_missing
from edge_stpm.common.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _parse(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_configs_parse_and_carry_the_contract(exported: Path, tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc", reason="tritonclient not installed (pip install 'edge-stpm[triton]')")
    from edge_stpm.contract.artifacts import read_onnx_metadata
    from edge_stpm.runtime.triton_repo.writer import write_repository

    written = write_repository(exported, tmp_path / "repo", max_batch=8, queue_delay_us=300, instances=2)
    assert written == {"edge_stpm": "python", "edge_stpm_onnxruntime": "onnxruntime_onnx"}, "no engine: no plan model"
    py = _parse(tmp_path / "repo" / "edge_stpm" / "config.pbtxt")
    ort = _parse(tmp_path / "repo" / "edge_stpm_onnxruntime" / "config.pbtxt")
    assert py.backend == "python" and py.max_batch_size == 8 and list(py.input[0].dims) == [128, 128, 3]
    assert list(py.dynamic_batching.preferred_batch_size) == [4, 8] and py.dynamic_batching.max_queue_delay_microseconds == 300
    assert py.instance_group[0].count == 2
    assert ort.platform == "onnxruntime_onnx" and ort.max_batch_size == 0 and list(ort.input[0].dims) == [1, 128, 128, 3]
    assert [o.name for o in ort.output] == ["anomaly_map", "score"] and list(ort.output[0].dims) == [1, 1, 128, 128]
    md = read_onnx_metadata(exported / "model_fp32.onnx")
    served = json.loads(py.parameters["edge_stpm_metadata"].string_value)
    assert served["thresholds"] == md["thresholds"] and served["image_size"] == 128 and served["fit"] == md["fit"]
    assert (tmp_path / "repo" / "edge_stpm" / "1" / "model.onnx").read_bytes() == (exported / "model_fp32.onnx").read_bytes()
    with pytest.raises(UserError, match="not a virtualenv"):
        write_repository(exported, tmp_path / "r2", env=tmp_path)
    with pytest.raises(UserError, match="no fp32 graph"):
        write_repository(tmp_path, tmp_path / "r3")


@pytest.fixture(scope="module")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory):
    why = triton_missing()
    if why:
        pytest.skip(why)
    from edge_stpm.runtime.triton_repo.writer import write_repository

    root = tmp_path_factory.mktemp("triton")
    write_repository(exported, root / "repo", env=TRITON_ENV, threads=1)
    srv = TritonServer(root / "repo", "edge_stpm", root / "server.log").start()
    yield srv
    srv.stop()


def _images(synth_dir: Path, n: int) -> list[Path]:
    return sorted((synth_dir / "test").glob("*/*.png"))[:n]


def test_served_model_gives_the_local_scores(server: TritonServer, exported: Path, synth_dir: Path) -> None:
    from edge_stpm.common.images import load_images
    from edge_stpm.runtime.inspector import Inspector
    from edge_stpm.runtime.backends.onnxruntime_backend import OnnxBackend
    from edge_stpm.runtime.backends.triton_backend import TritonBackend

    imgs = load_images(_images(synth_dir, 9), 128)
    tb = TritonBackend(server.url)
    mt, st = tb.infer(imgs)  # 9 images, one request (the Python model runs them in chunks of the graph's batch)
    mo, so = OnnxBackend(exported / "model_fp32.onnx", allow_gpu=False).infer_any(imgs)
    assert mt.shape == mo.shape and np.allclose(st, so, rtol=1e-5, atol=0) and np.abs(mt - mo).max() <= 1e-5 * mo.max()
    assert tb.metadata["thresholds"] == OnnxBackend(exported / "model_fp32.onnx", allow_gpu=False).metadata["thresholds"]
    local, remote = Inspector.load(exported / "model_fp32.onnx"), Inspector.load(server.url)
    try:
        frames = [np.ascontiguousarray(i) for i in imgs]
        a, b = local.inspect_batch(frames), remote.inspect_batch(frames)
    finally:
        local.close()
        remote.close()
    assert [x.verdict for x in a] == [x.verdict for x in b] and "NG" in {x.verdict for x in a}
    assert all(abs(x.score - y.score) <= 1e-5 * abs(x.score) for x, y in zip(a, b))
    for bad, msg in ((server.url.rsplit("/", 1)[0] + "/nope", "model 'nope' is not ready on the server; ready: edge_stpm"),
                     ("grpc://127.0.0.1:1/edge_stpm", "no Triton server there"),
                     ("grpc://127.0.0.1:8001", "give grpc://HOST:PORT/MODEL")):
        with pytest.raises(UserError, match=msg) as e:
            TritonBackend(bad)
        assert "\n" not in str(e.value)


def test_run_and_infer_through_the_server_match_local(server: TritonServer, exported: Path, synth_dir: Path,
                                                      tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge_stpm.cli", *args], capture_output=True, text=True,
                              timeout=300, cwd=ROOT)

    ev = {}
    for tag, model in (("local", str(exported / "model_fp32.onnx")), ("triton", server.url)):
        r = cli("run", "--model", model, "--source", str(synth_dir / "video.avi"), "--headless",
                "--history-db", str(tmp_path / f"{tag}.db"),
                "--events", str(tmp_path / f"{tag}.jsonl"), "--summary-json", str(tmp_path / f"{tag}.json"))
        assert r.returncode == 0, r.stderr
        ev[tag] = [json.loads(x) for x in (tmp_path / f"{tag}.jsonl").read_text().splitlines()]
        r = cli("infer", *map(str, _images(synth_dir, 8)), "--model", model, "--out", str(tmp_path / f"inf_{tag}"),
                "--no-overlays")
        assert r.returncode == 0, r.stderr
    assert len(ev["local"]) > 0 and [e["frame"] for e in ev["local"]] == [e["frame"] for e in ev["triton"]]
    assert all(abs(a["score"] - b["score"]) <= 1e-5 * abs(a["score"]) for a, b in zip(ev["local"], ev["triton"]))
    s = json.loads((tmp_path / "triton.json").read_text())
    assert s["frames"] == json.loads((tmp_path / "local.json").read_text())["frames"] and s["failed_frames"] == 0
    rows = sqlite3.connect(str(tmp_path / "triton.db")).execute("SELECT model_sha256 FROM inspections").fetchall()
    assert len(rows) == s["frames"] and {r[0] for r in rows} == {"triton:" + server.url}
    a, b = (json.loads((tmp_path / f"inf_{t}" / "summary.json").read_text()) for t in ("local", "triton"))
    rows = lambda r: r["images"] if isinstance(r, dict) else r  # noqa: E731
    assert [(x["verdict"], round(x["score"], 6)) for x in rows(a)] == [(x["verdict"], round(x["score"], 6)) for x in rows(b)]


def test_server_killed_mid_run_then_restarted(server: TritonServer, synth_dir: Path, tmp_path: Path) -> None:
    """The loop keeps going while the server is down: every frame is either inspected (and in the record) or
    counted as failed; once the server is back on its ports the next request goes through."""
    import cv2

    from edge_stpm.runtime.loop.pipeline import RunOptions, run
    from edge_stpm.runtime.loop.sinks.record import RecordSink, query
    from edge_stpm.runtime.inspector import Inspector

    imgs = [cv2.imread(str(p)) for p in _images(synth_dir, 4)]
    n = 240
    insp = Inspector.load(server.url)
    db = tmp_path / "h.db"

    def outage() -> None:
        time.sleep(2.0)
        server.kill()
        time.sleep(2.0)
        server.start()

    t = threading.Thread(target=outage)
    t.start()
    try:
        s = run(insp, PacedSource(imgs, n, 20.0), RunOptions(headless=True, sinks=[RecordSink(db, "sha")]),
                specs=["paced"])
    finally:
        t.join()
        stats = insp.backend.stats()
        insp.close()
    assert s.frames + s.failed_frames == n, (s.frames, s.failed_frames)
    assert s.failed_frames >= 20, "2 s down at 20 frames/s"
    assert stats["reconnects"] == 1 and not stats["down"]
    assert len(query(db, None, None, None, 10_000)) == s.frames, "the record holds every inspected frame"
    assert s.frames > 60, "frames inspected again after the restart"
