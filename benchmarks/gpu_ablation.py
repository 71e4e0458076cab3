"""What each PyTorch-CUDA optimisation buys, batch 1, model-only p50 by CUDA events (one run, one GPU).

usage: python benchmarks/gpu_ablation.py CHECKPOINT [ITERS]
"""
from __future__ import annotations

import statistics
import sys

import numpy as np
import torch

from edge_stpm.bench import time_cuda_graph, time_host
from edge_stpm.training.torch_backend import TorchBackend


def main() -> None:
    ckpt, iters = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300
    x = np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    variants = {
        "eager fp32 (baseline)": dict(precision="fp32", cuda_graph=False, optimize=False),
        "eager fp16 channels_last, BN folded": dict(precision="fp16", cuda_graph=False, twin=False),
        "CUDA graph fp16, BN folded": dict(precision="fp16", twin=False),
        "CUDA graph fp16, BN folded, twin trunk": dict(precision="fp16", twin=True),
    }
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; batch 1, 256x256, {iters} runs")
    print("| variant | model-only p50 ms | host→host p50 ms |")
    print("|---|---|---|")
    for name, kw in variants.items():
        b = TorchBackend(ckpt, device="cuda", batch=1, **kw)
        host = statistics.median(time_host(lambda: b.infer(x), iters, 50))
        model = statistics.median(time_cuda_graph(b, iters, 50)) if b.graph is not None else float("nan")
        print(f"| {name} | {model:.3f} | {host:.3f} |")


if __name__ == "__main__":
    main()
