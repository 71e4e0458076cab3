#!/usr/bin/env bash
# Host path vs device frame path on this machine (issue 13): edge-stpm bench on a bundle exported with frame
# graphs (ONNX Runtime FP32/FP16, batch 1, 640×480 and 1920×1080) and, given the checkpoint, the PyTorch rows.
# Make the bundle first: edge-stpm export --checkpoint CK --precision fp32,fp16 --frame-size 640x480,1920x1080 --out B
# usage: benchmarks/frame_path_bench.sh BUNDLE [CHECKPOINT] [OUT]   (default OUT benchmarks/results/frame_path)
set -euo pipefail
bundle=$1; ck=${2:-}; out=${3:-benchmarks/results/frame_path}
mkdir -p "$out"
edge-stpm bench --model "$bundle" --backend onnxruntime --precision fp32,fp16 --batch 1 --iters ${ITERS:-40} \
  --warmup 5 --frame-size 640x480,1920x1080 --quiet --out "$out/bench_onnxruntime" | tee "$out/bench_onnxruntime.txt"
if [ -n "$ck" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  edge-stpm bench --checkpoint "$ck" --backend pytorch --precision fp32 --batch 1 --iters ${ITERS:-40} --warmup 5 \
    --frame-size 640x480,1920x1080 --work "$tmp" --quiet --out "$out/bench_pytorch" | tee "$out/bench_pytorch.txt"
fi
