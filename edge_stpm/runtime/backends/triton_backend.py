"""A model served by Triton Inference Server as a Backend: ``--model grpc://HOST:PORT/MODEL`` (or ``http://``).

The box needs no model file: input size, fit, thresholds and the image score come from the model's config on the
server (the ``edge_stpm_metadata`` parameter ``edge-stpm triton-repo`` writes). Each ``infer`` is one request for
the whole batch (all of a box's sources in one step). A server that goes away is not fatal: ``infer`` raises
``BackendUnavailable`` (the loop counts the frames as failed and goes on), one line is logged per outage, and the
next request reconnects.
"""
from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import numpy as np

from edge_stpm.common.errors import UserError
from edge_stpm.common.progress import console
from edge_stpm.contract.artifacts import INPUT_NAME, OUTPUT_NAMES
from edge_stpm.contract.schema import GRAPH, check
from edge_stpm.runtime.backends.base import Backend, BackendUnavailable

SCHEMES = ("grpc", "http")
METADATA_PARAM = "edge_stpm_metadata"


def parse_target(text: str) -> tuple[str, str, str] | None:
    """``grpc://host:port/model`` → (scheme, "host:port", model); None if ``text`` is not such a URL. A URL that
    went through ``pathlib.Path`` (``grpc:/host:port/model``) is accepted too."""
    for s in SCHEMES:
        if text.startswith(f"{s}:/") and not text.startswith(f"{s}://"):
            text = f"{s}://" + text[len(s) + 2:]
    if not any(text.startswith(f"{s}://") for s in SCHEMES):
        return None
    try:
        u = urllib.parse.urlsplit(text)
        port = u.port
    except ValueError as exc:
        raise UserError(f"{text}: not a Triton URL ({exc})") from None
    model = u.path.strip("/")
    if not u.hostname or not model or "/" in model:
        raise UserError(f"{text}: give grpc://HOST:PORT/MODEL (or http://HOST:PORT/MODEL)")
    if port is not None and not 1 <= port <= 65535:  # before: port 0 silently became the default
        raise UserError(f"{text}: the port must be 1–65535")
    return u.scheme, f"{u.hostname}:{port if port is not None else (8001 if u.scheme == 'grpc' else 8000)}", model


class TritonBackend(Backend):
    name = "triton"

    def __init__(self, target: str, timeout_s: float = 10.0) -> None:
        parsed = parse_target(target)
        if parsed is None:
            raise UserError(f"{target}: not a Triton URL")
        self.scheme, self.url, self.model = parsed
        self.target, self.timeout_s = target, timeout_s
        try:
            if self.scheme == "grpc":
                import tritonclient.grpc as tc
            else:
                import tritonclient.http as tc
        except ImportError:
            raise UserError("a Triton server needs tritonclient: pip install 'edge-stpm[triton]'") from None
        self.tc = tc
        self.client = tc.InferenceServerClient(url=self.url)
        self.failed_requests, self.reconnects = 0, 0
        self.down_since: float | None = None
        self.metadata = self._config()
        self.image_size = int(self.metadata["image_size"])
        self.batch = None
        self.precision = f"{self.metadata.get('precision', 'fp32')} (server)"
        self.device = f"Triton at {self.url} ({self.model})"

    def _call(self, fn: str, *args: Any, **kw: Any) -> Any:
        if self.scheme == "grpc":
            kw.setdefault("client_timeout", self.timeout_s)
        return getattr(self.client, fn)(*args, **kw)

    def _config(self) -> dict[str, Any]:
        exc_t = self._exc()
        try:
            live = self._call("is_server_live")
        except exc_t as exc:  # connection refused, DNS, timeout
            raise UserError(f"{self.target}: no Triton server there ({_first_line(exc)})") from None
        except Exception as exc:  # noqa: BLE001 - the HTTP client raises socket errors of its own
            raise UserError(f"{self.target}: no Triton server there "
                            f"({type(exc).__name__}: {_first_line(exc)})") from None
        if not live:
            raise UserError(f"{self.target}: the Triton server is not live")
        try:
            ready = self._call("is_model_ready", self.model)
        except exc_t as exc:
            raise UserError(f"{self.target}: {_first_line(exc)}") from None
        if not ready:
            names = self._models()
            raise UserError(f"{self.target}: model {self.model!r} is not ready on the server; ready: {names or 'none'}")
        cfg = self._call("get_model_config", self.model, **({"as_json": True} if self.scheme == "grpc" else {}))
        cfg = cfg.get("config", cfg)
        raw = cfg.get("parameters", {}).get(METADATA_PARAM, {}).get("string_value")
        if not raw:
            raise UserError(f"{self.target}: model {self.model!r} has no {METADATA_PARAM} parameter: "
                            "write its repository with edge-stpm triton-repo")
        try:
            md = json.loads(raw)
        except json.JSONDecodeError:
            raise UserError(f"{self.target}: the model's {METADATA_PARAM} is not JSON") from None
        check(md, GRAPH, f"{self.target}: the model's {METADATA_PARAM}",
              "write its repository with edge-stpm triton-repo")
        self.max_batch = int(cfg.get("max_batch_size", 0) or 0)
        self.static_batch = None if self.max_batch else int(md.get("batch", 1))
        return md

    def _models(self) -> str:
        try:
            idx = self._call("get_model_repository_index", **({"as_json": True} if self.scheme == "grpc" else {}))
            rows = idx.get("models", idx) if isinstance(idx, dict) else idx
            return ", ".join(m["name"] for m in rows if m.get("state") == "READY")
        except Exception:  # noqa: BLE001 - only for the message
            return ""

    def _exc(self) -> type[Exception]:
        from tritonclient.utils import InferenceServerException

        return InferenceServerException

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.static_batch is not None and len(batch) != self.static_batch:
            return self.infer_any_static(batch)
        if self.max_batch and len(batch) > self.max_batch:
            parts = [self.infer(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        x = np.ascontiguousarray(batch, dtype=np.uint8)
        inp = self.tc.InferInput(INPUT_NAME, list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        outs = [self.tc.InferRequestedOutput(n) for n in OUTPUT_NAMES]
        try:
            r = self._call("infer", self.model, [inp], outputs=outs)
        except Exception as exc:  # noqa: BLE001 - server gone, timeout, model unloaded: the loop goes on
            self.failed_requests += 1
            if self.down_since is None:
                self.down_since = time.monotonic()
                console.print(f"warning: Triton {self.url} ({self.model}): {type(exc).__name__}: {_first_line(exc)}; "
                              "frames count as failed until it answers again", highlight=False, markup=False,
                              soft_wrap=True)
            raise BackendUnavailable(_first_line(exc)) from None
        if self.down_since is not None:
            self.reconnects += 1
            console.print(f"note: Triton {self.url}: answering again after {time.monotonic() - self.down_since:.1f} s",
                          highlight=False, markup=False, soft_wrap=True)
            self.down_since = None
        amap, score = r.as_numpy(OUTPUT_NAMES[0]), r.as_numpy(OUTPUT_NAMES[1])
        if amap is None or score is None or amap.shape[0] != len(batch):
            raise UserError(f"{self.target}: the server's answer has the wrong shape "
                            f"({None if amap is None else amap.shape} for {len(batch)} images)")
        return amap[:, 0].astype(np.float32), score.reshape(len(batch)).astype(np.float32)

    def infer_any_static(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, self.batch = self.batch, self.static_batch
        try:
            return self.infer_any(images)
        finally:
            self.batch = b

    def stats(self) -> dict[str, Any]:
        return {"failed_requests": self.failed_requests, "reconnects": self.reconnects,
                "down": self.down_since is not None}

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
