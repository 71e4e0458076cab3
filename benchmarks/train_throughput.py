"""Training throughput (images/s) and single-image latency on this machine's CPU, per backbone, 256².

usage: python benchmarks/train_throughput.py DATA_DIR   (any folder of good images; mobilenet_v2 needs its weights)
"""
from __future__ import annotations

import platform
import statistics
import sys
import time

import numpy as np
import torch

from edge_stpm.training.backbones import pretrained_state
from edge_stpm.training.model import STPM, InspectionPipeline, Preprocess, stpm_loss


def main() -> None:
    print(f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| backbone | train images/s (batch 32, fwd+bwd+SGD) | single-image latency p50 ms (PyTorch eager FP32) |")
    print("|---|---|---|")
    x8 = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (32, 256, 256, 3), dtype=np.uint8))
    for name, weights in (("mobilenet_v2", None), ("resnet18", "random")):
        state, _ = pretrained_state(name, weights)
        stpm = STPM(name, state).to(memory_format=torch.channels_last).train()
        pre = Preprocess()
        opt = torch.optim.SGD(stpm.student.parameters(), lr=0.4, momentum=0.9, weight_decay=1e-4)
        times = []
        for i in range(5):
            t = time.perf_counter()
            t_f, s_f = stpm(pre(x8).contiguous(memory_format=torch.channels_last))
            loss = stpm_loss(t_f, s_f)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 1:
                times.append(time.perf_counter() - t)
        pipe = InspectionPipeline(stpm.eval(), 256).eval()
        lat = []
        with torch.inference_mode():
            for i in range(25):
                t = time.perf_counter()
                pipe(x8[:1])
                if i >= 5:
                    lat.append((time.perf_counter() - t) * 1e3)
        print(f"| {name} | {32 / statistics.median(times):.1f} | {statistics.median(lat):.1f} |")


if __name__ == "__main__":
    main()
