#!/usr/bin/env bash
# The README's CPU performance table: edge-stpm bench for resnet18 (random weights: speed only) and
# mobilenet_v2 (real teacher) at 256², ONNX Runtime FP32/FP16/INT8 and PyTorch FP32, beside PyTorch eager.
# usage: benchmarks/cpu_bench.sh [MOBILENET_CHECKPOINT]   (default: trains 1 epoch on synthetic data)
set -euo pipefail
out=benchmarks/results/cpu
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
edge-stpm synth --out "$tmp/syn" --n-train 40 --n-test-good 4 --n-test-defect 2 --video-frames 10 >/dev/null
edge-stpm train --data "$tmp/syn" --backbone resnet18 --teacher-weights random --epochs 1 --out "$tmp/r18" --quiet >/dev/null 2>&1
mb=${1:-}
if [ -z "$mb" ]; then
  edge-stpm train --data "$tmp/syn" --backbone mobilenet_v2 --epochs 1 --out "$tmp/mb" --quiet >/dev/null
  mb="$tmp/mb/model.pt"
fi
for pair in "resnet18:$tmp/r18/model.pt" "mobilenet_v2:$mb"; do
  name=${pair%%:*}; ck=${pair#*:}
  edge-stpm bench --checkpoint "$ck" --backend onnxruntime,pytorch --precision fp32,fp16,int8 --batch 1,8 \
    --iters ${ITERS:-40} --warmup 5 --work "$tmp/w_$name" --quiet \
    --out "$out/$name"
done
python3 benchmarks/train_throughput.py "$tmp/syn" | tee "$out/train_throughput.md"
