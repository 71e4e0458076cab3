#!/usr/bin/env bash
# The rest of round 3 after M3/M4 (RULE_R3.md addendum), cheapest first so that a session's CPU time covers most:
# M6 (coreset 3 %) seeds 0–2, then M5 (384²) seed 0, then M1/M2 seeds 1–2.
set -uo pipefail
cd "$(dirname "$0")/../.."
r() { bash benchmarks/r1/accuracy_run.sh "$@" || echo "FAILED: $*"; }
for s in 0 1 2; do r r3_M6 $s --head memory --fit stretch --score-top 0 --coreset 0.03; done
r r3_M5 0 --head memory --fit stretch --score-top 0 --size 384
for s in 1 2; do r r3_M1 $s --head memory --fit pad --score-top 2; r r3_M2 $s --head memory --fit pad --score-top 0; done
for s in 1 2; do r r3_M5 $s --head memory --fit stretch --score-top 0 --size 384; done
