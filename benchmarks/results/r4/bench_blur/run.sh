#!/bin/bash
# one run, idle: STPM, memory σ 0 (today), memory σ 1 input blur — edge-stpm bench, ONNX Runtime FP32, batch 1
cd /tmp/bench_r5
uptime > uptime_before.txt
for m in stpm mem0 mem1; do
  edge-stpm bench --model /tmp/bench_r5/$m --backend onnxruntime --precision fp32 --batch 1 --out /tmp/bench_r5/out_$m > /tmp/bench_r5/bench_$m.log 2>&1
done
uptime > uptime_after.txt
