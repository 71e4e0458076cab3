#!/usr/bin/env bash
# RULE_R3.md addendum 3: the default (memory, stretch, top 2 %, coreset 1 %, k 2) with --tiles 2x2 on magnetic tile,
# seeds 0-2 as CPU time allows (T2). Run at nice 19 beside other work.
set -uo pipefail
cd "$(dirname "$0")/../.."
for s in 0 1 2; do bash benchmarks/r1/accuracy_run.sh r3_T2 $s --tiles 2x2 || echo "FAILED: r3_T2 seed $s"; done
