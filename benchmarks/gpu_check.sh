#!/usr/bin/env bash
# The one prepared GPU check (run on a machine with an NVIDIA GPU, PyTorch+CUDA and cuda-python):
#   1. the CUDA tests (PyTorch CUDA backend, CUDA graphs, BN folding, cuda-python buffers and copies);
#   2. edge-stpm bench for resnet18 (random weights: only speed is measured) with the PyTorch backend,
#      FP16 and FP32, batch 1 and 32, beside the PyTorch eager FP32 baseline; its frame-path table compares, per
#      batch-1 row, the host path and the device frame path (CUDA graph: one upload, one download) end to end at
#      640×480 and 1920×1080 (issue 13's target: ≤ 1.0 ms p50 at 640×480, resnet18 FP16).
# Results go to $OUT (or benchmarks/results/gpu/). No install needed: runs from the checkout.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
out=${OUT:-benchmarks/results/gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -rs tests/slow/test_gpu.py 2>&1 | tee "$out/gpu_tests.log"
tmp=$(mktemp -d)
python3 -m edge_stpm.cli synth --out "$tmp/syn" --n-train 40 --n-test-good 4 --n-test-defect 2 --video-frames 10 >/dev/null
python3 -m edge_stpm.cli train --data "$tmp/syn" --backbone resnet18 --teacher-weights random --epochs 1 \
  --out "$tmp/r18" --quiet 2>&1 | grep -v warning
python3 -m edge_stpm.cli bench --checkpoint "$tmp/r18/model.pt" --backend pytorch --precision fp16,fp32 \
  --batch 1,32 --iters ${ITERS:-300} --warmup 50 --work "$tmp/w" --quiet \
  --out "$out/bench_resnet18_gpu"
cat "$out/bench_resnet18_gpu/bench.md"
python3 benchmarks/gpu_ablation.py "$tmp/r18/model.pt" ${ITERS:-300} | tee "$out/ablation_resnet18_gpu.md"
