#!/bin/bash
# a second run, idle, 200 timed runs each, order reversed: memory σ 1, memory σ 0, STPM
cd /tmp/bench_r5
uptime > uptime2_before.txt
for m in mem1 mem0 stpm; do
  edge-stpm bench --model /tmp/bench_r5/$m --backend onnxruntime --precision fp32 --batch 1 --iters 200 --frame-size "" --out /tmp/bench_r5/out2_$m > /tmp/bench_r5/bench2_$m.log 2>&1
done
uptime > uptime2_after.txt
