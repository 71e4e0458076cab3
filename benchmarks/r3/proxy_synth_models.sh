#!/usr/bin/env bash
# Models of different quality on the synthetic parts, for the proxy study (benchmarks/r3/proxy_study.py): STPM after
# 1, 3 and 20 epochs, the memory head at three coreset budgets and two fits, and both. usage: benchmarks/r3/proxy_synth_models.sh WORK
set -euo pipefail
w=$1; mkdir -p "$w"
[ -d "$w/data" ] || edge-stpm synth --out "$w/data" --size 128 --n-train 60 --n-test-good 20 --n-test-defect 8 --seed 3
t() { name=$1; shift; [ -f "$w/$name/run/model.pt" ] || edge-stpm train --data "$w/data" --backbone mobilenet_v2 --size 128 \
        --batch-size 8 --out "$w/$name/run" --quiet "$@" > /dev/null; }
t stpm_e1 --head stpm --epochs 1
t stpm_e3 --head stpm --epochs 3
t stpm_e20 --head stpm --epochs 20
t mem_0.1pct --head memory --coreset 0.001
t mem_1pct --head memory
t mem_10pct --head memory --coreset 0.1
t mem_stretch --head memory --fit stretch
cp "$w/stpm_e20/run/model.pt" "$w/both_e20.pt" && edge-stpm calibrate --checkpoint "$w/both_e20.pt" --head both --quiet > /dev/null
mkdir -p "$w/both_e20/run" && mv "$w/both_e20.pt" "$w/both_e20/run/model.pt"
