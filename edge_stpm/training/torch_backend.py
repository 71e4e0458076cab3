"""PyTorch backend on a checkpoint: CPU FP32, or CUDA with FP16 trunks, channels_last, batch-norm folded
into the convolutions, pinned host buffers and CUDA-graph replay for a fixed batch."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from edge_stpm.common.errors import UserError
from edge_stpm.contract.scale import ScoreScale
from edge_stpm.runtime.backends.base import Backend, FrameRunner
from edge_stpm.training import checkpoint
from edge_stpm.training.backbones import get_spec
from edge_stpm.training.devices import set_threads
from edge_stpm.training.framepath import FramePipeline
from edge_stpm.training.model import InspectionPipeline
from edge_stpm.training.twin import TwinPipeline


def fold_batchnorm(trunk: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the preceding convolution (torch.fx); same outputs, fewer kernels."""
    return fuse(copy.deepcopy(trunk).eval(), inplace=True)


def optimise(pipe: InspectionPipeline, device: torch.device, fp16: bool, fold: bool = True,
             twin: bool = False) -> nn.Module:
    """A copy of the pipeline for fast inference: BN folded, optionally teacher and student merged into one
    grouped-conv trunk (``runtime.twin``), channels_last, FP16 trunks (the head stays FP32)."""
    p: nn.Module = copy.deepcopy(pipe).eval()
    if fold or twin:
        p.teacher = fold_batchnorm(p.teacher)
        p.student = fold_batchnorm(p.student)
    if twin:
        p = TwinPipeline(p, get_spec(pipe.backbone).channels).eval()
        p = p.to(device).to(memory_format=torch.channels_last)
        if fp16:
            p.twin.half()
            p.trunk_dtype = torch.float16
        return p
    p = p.to(device).to(memory_format=torch.channels_last)
    if fp16:
        p.teacher.half()
        p.student.half()
        p.trunk_dtype = torch.float16
    return p


class TorchBackend(Backend):
    """``precision`` fp32 or fp16 (CUDA only); ``cuda_graph`` replays a captured graph for a fixed ``batch``;
    ``optimize`` folds batch norm (and on CUDA merges teacher and student into one twin trunk unless ``twin``
    is False); ``optimize=False`` is the plain eager pipeline used as the benchmark baseline."""

    name = "pytorch"

    def __init__(self, path: Path, device: str = "auto", precision: str | None = None, batch: int = 1,
                 cuda_graph: bool = True, optimize: bool = True, threads: int | None = None,
                 twin: bool | None = None) -> None:
        pipe, self.metadata = checkpoint.load_pipeline(Path(path))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("PyTorch sees no CUDA GPU here: use --device cpu")
        self.dev = torch.device(device)
        cuda = self.dev.type == "cuda"
        self.precision = precision or ("fp16" if cuda else "fp32")
        if self.precision not in ("fp32", "fp16") or (self.precision == "fp16" and not cuda):
            raise UserError(f"the PyTorch backend runs fp32 on CPU and fp32/fp16 on CUDA, not {self.precision} on {device}")
        if self.dev.type == "cpu" or threads:
            set_threads(threads)
        self.image_size = int(self.metadata["image_size"])
        self.batch = batch if cuda and cuda_graph else None
        self.twin = bool(optimize and cuda) if twin is None else twin
        self.pipe = (optimise(pipe, self.dev, self.precision == "fp16", fold=optimize, twin=self.twin)
                     if optimize or cuda else pipe)
        self.device = torch.cuda.get_device_name(self.dev) if cuda else f"CPU ({torch.get_num_threads()} threads)"
        self.graph: torch.cuda.CUDAGraph | None = None
        if cuda and cuda_graph:
            self._capture(batch)

    @torch.inference_mode()
    def _capture(self, batch: int) -> None:
        s = self.image_size
        self.static_in = torch.zeros((batch, s, s, 3), dtype=torch.uint8, device=self.dev)
        self.host_in = torch.empty((batch, s, s, 3), dtype=torch.uint8).pin_memory()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.pipe(self.static_in)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_map, self.static_score = self.pipe(self.static_in)
        self.host_map = torch.empty(tuple(self.static_map.shape), dtype=torch.float32).pin_memory()
        self.host_score = torch.empty(tuple(self.static_score.shape), dtype=torch.float32).pin_memory()

    @property
    def accelerated(self) -> bool:
        return self.dev.type == "cuda"

    def frame_runner(self, height: int, width: int) -> FrameRunner | None:
        return TorchFrameRunner(self, height, width)

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.graph is not None:
            self.host_in.numpy()[...] = batch
            self.static_in.copy_(self.host_in, non_blocking=True)
            self.graph.replay()
            self.host_map.copy_(self.static_map, non_blocking=True)
            self.host_score.copy_(self.static_score, non_blocking=True)
            torch.cuda.current_stream().synchronize()
            return self.host_map.numpy()[:, 0].copy(), self.host_score.numpy().copy()
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.dev)
        m, s = self.pipe(x)
        return m[:, 0].float().cpu().numpy(), s.float().cpu().numpy()


class TorchFrameRunner(FrameRunner):
    """``framepath.FramePipeline`` around the backend's (optimised) pipeline: on CUDA captured in a CUDA graph with
    pinned host buffers — one upload of the frame, one download of map, score and overlay per replay; on the CPU
    run eagerly."""

    name = "pytorch frame path"

    @torch.inference_mode()
    def __init__(self, backend: TorchBackend, height: int, width: int) -> None:
        self.height, self.width = int(height), int(width)
        self.dev = backend.dev
        self.module = FramePipeline(backend.pipe, (self.height, self.width), backend.metadata.get("fit", "stretch"),
                                    pixel_zero=ScoreScale.of(backend.metadata["thresholds"]).pixel_zero)
        self.module = self.module.to(self.dev).eval()
        self.graph: torch.cuda.CUDAGraph | None = None
        if self.dev.type == "cuda" and backend.graph is not None:
            self.static_in = torch.zeros((1, self.height, self.width, 3), dtype=torch.uint8, device=self.dev)
            self.static_scale = torch.ones(1, device=self.dev)
            self.host_in = torch.empty((1, self.height, self.width, 3), dtype=torch.uint8).pin_memory()
            self.host_scale = torch.ones(1).pin_memory()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.module(self.static_in, self.static_scale)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_out = self.module(self.static_in, self.static_scale)
            self.host_out = [torch.empty(tuple(t.shape), dtype=t.dtype).pin_memory() for t in self.static_out]

    @torch.inference_mode()
    def run(self, frame: np.ndarray, index_scale: float) -> tuple[np.ndarray, float, np.ndarray]:
        if self.graph is not None:
            self.host_in.numpy()[0] = frame
            self.host_scale.numpy()[0] = index_scale
            self.static_in.copy_(self.host_in, non_blocking=True)
            self.static_scale.copy_(self.host_scale, non_blocking=True)
            self.graph.replay()
            for h, d in zip(self.host_out, self.static_out):
                h.copy_(d, non_blocking=True)
            torch.cuda.current_stream().synchronize()
            amap, score, shown = (h.numpy() for h in self.host_out)
            return amap[0, 0].copy(), float(score[0]), shown[0].copy()
        x = torch.from_numpy(np.ascontiguousarray(frame)[None]).to(self.dev)
        amap, score, shown = self.module(x, torch.tensor([index_scale], dtype=torch.float32, device=self.dev))
        return amap[0, 0].float().cpu().numpy(), float(score[0]), shown[0].cpu().numpy()
