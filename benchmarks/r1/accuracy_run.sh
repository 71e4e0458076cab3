#!/usr/bin/env bash
# One accuracy run for the default-selection rule (benchmarks/results/accuracy/RULE.md): train with the given
# options and seed on magnetic tile, evaluate, keep training.json + report under results/accuracy/NAME/seedSEED.
# usage: benchmarks/r1/accuracy_run.sh NAME SEED [train options...]   (env DATA, WORK, THREADS)
set -euo pipefail
name=$1; seed=$2; shift 2
data=${DATA:-../shared/data/magnetic_tile}
work=${WORK:-/tmp/acc}/$name/seed$seed
keep=benchmarks/results/accuracy/$name/seed$seed
threads=${THREADS:-1}
mkdir -p "$work" "$keep"
start=$(date +%s)
edge-stpm train --data "$data" --backbone mobilenet_v2 --seed "$seed" --threads "$threads" --out "$work/run" \
  --quiet "$@" | tee "$keep/train.txt"
echo "train wall seconds: $(( $(date +%s) - start )) (threads $threads)" | tee -a "$keep/train.txt"
edge-stpm evaluate --checkpoint "$work/run/model.pt" --data "$data" --out "$work/report" --threads "$threads" \
  --quiet | tee "$keep/evaluate.txt"
cp "$work/run/training.json" "$work/report/report.json" "$work/report/report.md" "$keep/"
if [ -f "$work/run/loss.png" ]; then cp "$work/run/loss.png" "$keep/"; fi  # a memory-only head trains nothing: no curve
