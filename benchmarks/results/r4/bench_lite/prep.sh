#!/bin/bash
# the three bundles for addendum 18's speed gate: STPM (mobilenet_v2), memory I1p (mobilenet_v2), memory L1p (lite0, seed 0)
set -e
cd /tmp/bench_r10
D=/work/shared/data/magnetic_tile
[ -d $D ] || D=$(realpath /work/main/../shared/data/magnetic_tile)
nice -n 19 edge-stpm train --data $D --backbone mobilenet_v2 --head stpm --epochs 1 --seed 0 --out /tmp/bench_r10/stpm_run --quiet > train_stpm.log 2>&1
nice -n 19 edge-stpm train --data $D --backbone mobilenet_v2 --seed 0 --out /tmp/bench_r10/mem_run --quiet > train_mem.log 2>&1
for m in stpm mem; do
  nice -n 19 edge-stpm export --checkpoint /tmp/bench_r10/${m}_run/model.pt --precision fp32 --out /tmp/bench_r10/$m --quiet > export_$m.log 2>&1
done
nice -n 19 edge-stpm export --checkpoint /tmp/r4L/L1p_seed0/run/model.pt --precision fp32 --out /tmp/bench_r10/lite --quiet > export_lite.log 2>&1
echo prepared
