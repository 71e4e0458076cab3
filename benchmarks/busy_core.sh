#!/usr/bin/env bash
# Idle vs. one core held busy by another process (a Python busy loop), for the test suite and for `edge-stpm bench`.
# Shows that CPU inference and training do not collapse when the box runs other work (OpenMP workers sleep instead
# of spinning: edge_stpm sets OMP_WAIT_POLICY=PASSIVE before torch loads). Also runs bench busy with
# OMP_WAIT_POLICY=ACTIVE, the old behaviour, for comparison. Usage: bash benchmarks/busy_core.sh [OUT]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/busy_core}
mkdir -p "$out"
tmp=$(mktemp -d)
edge-stpm synth --out "$tmp/syn" --size 128 --n-train 40 --video-frames 10 >/dev/null
edge-stpm train --data "$tmp/syn" --backbone mobilenet_v2 --epochs 2 --size 128 --batch-size 8 --out "$tmp/run" --quiet >/dev/null 2>&1
busy() { python3 -c "while True: pass" >/dev/null 2>&1 & echo $!; }
t() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local rc=$?; python3 -c "print(f'{$(date +%s.%N)-$s:.1f}')"; return $rc; }
bench() { edge-stpm bench --model "$tmp/run/model.pt" --backend onnxruntime,pytorch --precision fp32 --batch 1 \
            --iters 30 --warmup 5 --work "$tmp/w" --quiet --out "$1"; }
bench "$tmp/warm" >/dev/null 2>&1   # exports the graph once
{
  echo "# idle vs one busy core ($(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%F)"
  echo
  echo "| what | idle s | busy s | busy / idle |"
  echo "|---|---|---|---|"
  for what in suite bench; do
    if [ $what = suite ]; then cmd=(python3 -m pytest -q -p no:cacheprovider -x); else cmd=(bench "$tmp/idle"); fi
    i=$(t "${cmd[@]}")
    pid=$(busy); sleep 1
    if [ $what = bench ]; then cmd=(bench "$tmp/busy"); fi
    b=$(t "${cmd[@]}")
    kill $pid
    echo "| $what | $i | $b | $(python3 -c "print(f'{$b/$i:.2f}')") |"
  done
  pid=$(busy); sleep 1
  a=$(OMP_WAIT_POLICY=ACTIVE GOMP_SPINCOUNT=30000000000 t bench "$tmp/active")
  kill $pid
  echo "| bench, busy, OMP_WAIT_POLICY=ACTIVE (before) | | $a | |"
  echo
  python3 - "$tmp" <<'PY'
import json, sys
for name in ("idle", "busy", "active"):
    r = json.load(open(f"{sys.argv[1]}/{name}/bench.json"))
    rows = {x["label"]: x for x in r["rows"]}
    print(f"- bench {name}: " + "; ".join(f"{k} model p50 {v['model_ms'].get('p50', float('nan')):.1f} ms" for k, v in rows.items() if v["status"] == "ok"))
PY
} | tee "$out/busy_core.md"
