#!/usr/bin/env bash
# Accuracy on real data: train mobilenet_v2 (real ImageNet teacher) on magnetic tile with the defaults a user
# gets, evaluate, then export FP32/FP16/INT8 graphs and score each on the test split with ONNX Runtime.
# usage: benchmarks/magnetic_tile.sh [DATA] [OUT] [extra train options, e.g. --fit pad]
set -euo pipefail
data=${1:-../shared/data/magnetic_tile}
out=${2:-benchmarks/results/magnetic_tile}
shift $(( $# > 2 ? 2 : $# )) || true
mkdir -p "$out"
start=$(date +%s)
edge-stpm train --data "$data" --backbone mobilenet_v2 --out "$out/run" --quiet "$@" | tee "$out/train.txt"
echo "train wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/train.txt"
edge-stpm evaluate --checkpoint "$out/run/model.pt" --data "$data" --out "$out/report" --quiet | tee "$out/evaluate.txt"
edge-stpm export --checkpoint "$out/run/model.pt" --precision fp32,fp16,int8 --out "$out/engines" \
  --calib-root "$out/calibration" --data "$data" --quiet | tee "$out/export.txt"
