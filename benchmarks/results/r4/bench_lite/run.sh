#!/bin/bash
# one run, idle: STPM (mobilenet_v2), memory I1p (mobilenet_v2), memory L1p (efficientnet_lite0) — ONNX Runtime FP32, batch 1
cd /tmp/bench_r10
uptime > uptime_before.txt
for m in stpm mem lite; do
  edge-stpm bench --model /tmp/bench_r10/$m --backend onnxruntime --precision fp32 --batch 1 --iters 200 --out /tmp/bench_r10/out_$m > bench_$m.log 2>&1
done
uptime > uptime_after.txt
