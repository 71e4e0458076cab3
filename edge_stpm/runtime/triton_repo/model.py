"""The Python-backend model ``edge-stpm triton-repo`` writes into a Triton model repository (as ``1/model.py``).

It runs the bundle's ONNX graph (``1/model.onnx``) with ONNX Runtime inside Triton's Python backend, for servers
without the ONNX Runtime or TensorRT backends (and for our tests, on the CPU-only server of the nvidia-pytriton
wheel). Requests that Triton's dynamic batcher groups into one ``execute`` call are concatenated and run in
chunks of the graph's static batch (the last chunk padded), then split back per request. Needs numpy and
onnxruntime in the Python environment the model's ``EXECUTION_ENV_PATH`` names. No edge_stpm import: the server
needs only this file and the graph.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "0") or 0)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.batch = int(inp.shape[0])
        self.calls = 0

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        counts = [len(a) for a in arrays]
        x = np.concatenate(arrays)
        maps, scores = [], []
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - n, axis=0)])
            m, s = self.session.run(None, {self.input_name: np.ascontiguousarray(chunk)})
            maps.append(m[:n])
            scores.append(s[:n])
        maps_all, scores_all = np.concatenate(maps), np.concatenate(scores).reshape(-1, 1)
        out, start = [], 0
        for n in counts:
            out.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("anomaly_map", maps_all[start:start + n].astype(np.float32)),
                pb_utils.Tensor("score", scores_all[start:start + n].astype(np.float32))]))
            start += n
        self.calls += 1
        return out

    def finalize(self) -> None:
        self.session = None
