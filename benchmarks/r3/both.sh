#!/usr/bin/env bash
# Candidate B of RULE_R3.md: an STPM checkpoint of r3_stpm (fit pad, top-2 %) given the memory bank as well
# (calibrate --head both: nothing retrained), evaluated. usage: benchmarks/r3/both.sh SEED  (env WORK as ../r1/accuracy_run.sh)
set -euo pipefail
seed=$1; work=${WORK:-/tmp/acc}; data=${DATA:-../shared/data/magnetic_tile}
src=$work/r3_stpm/seed$seed/run; dst=$work/r3_B/seed$seed; keep=benchmarks/results/accuracy/r3_B/seed$seed
mkdir -p "$dst/run" "$keep"
cp "$src/model.pt" "$dst/run/model.pt"
start=$(date +%s)
edge-stpm calibrate --checkpoint "$dst/run/model.pt" --head both --threads 1 --quiet | tee "$keep/train.txt"
python3 - "$dst/run/model.pt" "$dst/run/training.json" "$(( $(date +%s) - start ))" <<'PY'
import json, sys, torch
ck = torch.load(sys.argv[1], weights_only=True)
t = {k: v for k, v in ck["training"].items() if k not in ("val_images", "train_images")}
t["wall_seconds"] = t.get("wall_seconds", 0) + float(sys.argv[3])  # the student's training + the bank
json.dump(t | {"thresholds": ck["thresholds"], "head": ck["head"], "head_weights": ck["head_weights"]},
          open(sys.argv[2], "w"), indent=1, default=str)
PY
edge-stpm evaluate --checkpoint "$dst/run/model.pt" --data "$data" --out "$dst/report" --threads 1 --quiet | tee "$keep/evaluate.txt"
cp "$dst/run/training.json" "$dst/report/report.json" "$dst/report/report.md" "$keep/"
