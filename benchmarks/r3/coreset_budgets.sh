#!/usr/bin/env bash
# The memory bank at several coreset budgets, for the size / latency table (RULE_R3.md): a memory-head checkpoint's
# bank rebuilt at each budget (calibrate --head memory --coreset R: same images, same seed) and exported (FP32).
# usage: benchmarks/r3/coreset_budgets.sh CHECKPOINT OUT_DIR [RATIO...]   then: edge-stpm bench --model OUT_DIR/cs_R ...
set -euo pipefail
ckpt=$1; out=$2; shift 2
ratios=${*:-0.001 0.003 0.01 0.03 0.05}
mkdir -p "$out"
for r in $ratios; do
  mkdir -p "$out/ck_$r" && cp "$ckpt" "$out/ck_$r/model.pt"
  edge-stpm calibrate --checkpoint "$out/ck_$r/model.pt" --head memory --coreset "$r" --quiet
  edge-stpm export --checkpoint "$out/ck_$r/model.pt" --precision fp32 --out "$out/cs_$r" --quiet > /dev/null
  echo "coreset $r: $(du -b "$out/cs_$r/model_fp32.onnx" | cut -f1) bytes"
done
