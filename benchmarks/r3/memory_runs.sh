#!/usr/bin/env bash
# Round 3 candidates M1–M4 (benchmarks/results/accuracy/RULE_R3.md) for the given seeds: the memory head on
# magnetic tile, each trained (bank built) and evaluated by ../r1/accuracy_run.sh. usage: benchmarks/r3/memory_runs.sh SEED...
set -euo pipefail
cd "$(dirname "$0")/../.."
for seed in "$@"; do
  bash benchmarks/r1/accuracy_run.sh r3_M1 "$seed" --head memory --fit pad --score-top 2
  bash benchmarks/r1/accuracy_run.sh r3_M2 "$seed" --head memory --fit pad --score-top 0
  bash benchmarks/r1/accuracy_run.sh r3_M3 "$seed" --head memory --fit stretch --score-top 0
  bash benchmarks/r1/accuracy_run.sh r3_M4 "$seed" --head memory --fit stretch --score-top 2
done
